"""Format version 1: round trips, version-0 export, damage detection, indexes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import IIDChecksumError, IIDError, IIDFile, IIDLimitError, schema
from iidschema.reader import Reader1


@pytest.fixture
def iidfile_reference():
    """iidfile 0.2.0 (the reference), used here only as a reader."""
    import iidfile

    return iidfile


def _disk(r: int) -> np.ndarray:
    yy, xx = np.ogrid[: 2 * r, : 2 * r]
    return (yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r


def _scene(offset: int = 0, n: int = 40, seed: int = 3) -> IIDFile:
    """A file with blobs, noise, thin shapes and multi-island masks, shifted by ``offset``."""
    rng = np.random.default_rng(seed)
    f = IIDFile()
    f.meta.data = {"image": {"height": offset + 600, "width": offset + 800}, "note": "v1 ✓"}
    for i in range(n):
        kind = i % 4
        if kind == 0:
            m = _disk(int(rng.integers(3, 30)))
        elif kind == 1:
            m = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < 0.3
        elif kind == 2:
            m = np.ones((1, int(rng.integers(1, 90))), bool) if rng.random() < 0.5 else np.ones((int(rng.integers(1, 90)), 1), bool)
        else:
            m = np.zeros((50, 50), bool)
            m[::7, ::9] = True
        r, c = int(rng.integers(0, 500)) + offset, int(rng.integers(0, 700)) + offset
        f.add(f"a{i}".encode(), [b"", b"wordnet", b"demo"][i % 3], (r, c, r + m.shape[0], c + m.shape[1]), m,
              group=["even" if i % 2 == 0 else "odd"] + (["tiny"] if i in (3, 17) else []))
    f.add(b"empty", b"demo", (offset, offset, offset + 5, offset + 7), np.zeros((5, 7), bool))
    return f


def _same(a: IIDFile, b: IIDFile) -> None:
    assert len(a) == len(b)
    for x, y in zip(a.fetch(everything=True), b.fetch(everything=True)):
        assert x.key == y.key
        assert (x.iid.address, x.iid.domain) == (y.iid.address, y.iid.domain)
        assert x.seg.bbox == y.seg.bbox and x.seg.area == y.seg.area
        np.testing.assert_array_equal(x.seg.mask(), y.seg.mask())
    assert {g: a.groups.keys(g).tolist() for g in a.groups} == {g: b.groups.keys(g).tolist() for g in b.groups}
    assert a.meta.data == b.meta.data


@pytest.mark.parametrize("codec", ["auto", "packbits", "rle", "zstd", 0, 1, 2])
def test_round_trip_wide_coordinates(tmp_path, codec):
    f = _scene(offset=100_000)
    path = tmp_path / "wide.iid"
    f.save(path, version=1, codec=codec)
    with iidschema.open(path) as g:
        assert g.version == 1
        _same(f, g)


def test_default_version_is_1(tmp_path):
    f = _scene()
    f.save(tmp_path / "x.iid")
    assert open(tmp_path / "x.iid", "rb").read(4) == b"\x01\0\0\0"


def test_mixed_codecs_in_one_file(tmp_path):
    """auto picks different codecs for different regions; all read back."""
    f = _scene(offset=70_000, n=60)
    big = np.ones((300, 400), bool)  # rle/zstd win
    f.add(b"big", b"demo", (70_000, 70_000, 70_300, 70_400), big)
    path = tmp_path / "mixed.iid"
    f.save(path, version=1, codec="auto")
    with iidschema.open(path) as g:
        used = {r.codec for e in g.fetch(everything=True) for r in e.seg.regions}
        assert len(used) >= 2, used
        _same(f, g)


def test_version0_export_when_it_fits_reads_in_iidfile(tmp_path, iidfile_reference):
    f = _scene()
    v1 = tmp_path / "a.iid"
    f.save(v1, version=1, codec="rle")
    g = iidschema.open(v1)
    v0 = tmp_path / "a0.iid"
    g.save(v0, version=0)  # transcodes rle -> packbits
    ref = iidfile_reference.IIDFile(fpath=str(v0))
    entries = sorted(ref.fetch(everything=True), key=lambda e: e.key)
    assert len(entries) == len(f)
    for e, mine in zip(entries, f.fetch(everything=True)):
        assert e.iid.address == mine.iid.address
        assert (e.iid.domain or b"") == mine.iid.domain
        assert tuple(e.seg.bbox) == mine.seg.bbox
        assert e.seg.area == mine.seg.area
        np.testing.assert_array_equal(e.seg.mask().astype(bool), mine.seg.mask())
    assert {n: sorted(ref.groups._entries[n].keys_set) for n in ref.groups.list()} == {
        n: f.groups.keys(n).tolist() for n in f.groups
    }


def test_version0_export_refuses_what_does_not_fit(tmp_path):
    f = _scene(offset=65_530, n=4)
    target = tmp_path / "old.iid"
    target.write_bytes(b"previous content")
    with pytest.raises(IIDLimitError, match="65535"):
        f.save(target, version=0)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["old.iid"]


def test_unknown_optional_section_is_skipped_and_required_refused(tmp_path):
    f = _scene(n=6)
    path = tmp_path / "s.iid"
    f.save(path)
    data = bytearray(path.read_bytes())
    header = schema.Header1.parse(bytes(data))
    # Rewrite section 7 (address index) as an unknown id 0x8001: optional, then required.
    for flags, ok in ((0, True), (schema.SECTION_REQUIRED, False)):
        h = schema.Header1.parse(bytes(data))
        for sec in h.sections:
            if sec.id == schema.SectionId.ADDRESS_INDEX:
                sec.id, sec.flags = 0x8001, flags
        raw = bytearray(schema.Header1.build(h))
        from iidschema.reader import crc32c

        raw[-4:] = crc32c(bytes(raw[:-4])).to_bytes(4, "little")
        patched = bytes(raw) + bytes(data[len(raw):])
        if ok:
            g = IIDFile(patched)
            assert g._reader.unknown_sections()[0][0] == 0x8001
            assert [e.key for e in g.look_for(b"a1")] == [1]  # falls back to a scan
        else:
            with pytest.raises(iidschema.IIDFormatError, match="required"):
                IIDFile(patched)
    assert header.section_count == 9


def _read_everything(data: bytes) -> list:
    f = IIDFile(data)
    out = [f.meta.data, {g: f.groups.keys(g).tolist() for g in f.groups}]
    for e in f.fetch(everything=True):
        out.append((e.key, e.iid.address, e.iid.domain, e.seg.bbox, e.seg.area, hashlib.sha256(np.packbits(e.seg.mask())).hexdigest()))
    out.append([e.key for e in f.at(30, 40)])
    out.append([e.key for e in f.region((0, 0, 300, 300))])
    out.append([e.key for e in f.look_for([b"a1", b"a7"])])
    return out


def test_flip_any_byte_never_gives_wrong_data(tmp_path):
    """Flip one byte anywhere: identical data or the library's own error, never a wrong answer or a crash."""
    f = _scene(n=12)
    path = tmp_path / "f.iid"
    f.save(path, version=1, codec="auto")
    data = path.read_bytes()
    expected = _read_everything(data)
    errors = 0
    positions = range(len(data)) if len(data) <= 6000 else np.random.default_rng(0).choice(len(data), 6000, replace=False)
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 0x5A
        try:
            got = _read_everything(bytes(damaged))
        except IIDError:
            errors += 1
            continue
        assert got == expected, f"byte {pos} changed the data silently"
    assert errors > 0


def test_damage_is_local(tmp_path):
    """A damaged segment raises IIDChecksumError for that entry only; the rest stays readable."""
    f = _scene(n=20)
    path = tmp_path / "d.iid"
    f.save(path)
    data = bytearray(path.read_bytes())
    g = IIDFile(bytes(data))
    segs_off, _ = g._reader.sections()["segs"]
    row = g.lut[5]
    data[segs_off + int(row["seg"]["offset"]) + 10] ^= 1
    h = IIDFile(bytes(data))
    with pytest.raises(IIDChecksumError, match="entry 5"):
        h[5].seg
    for k in range(len(h)):
        if k != 5:
            h[k].seg.mask()
            h[k].iid


# -- indexes agree with brute force --------------------------------------------------------

boxes_st = st.lists(
    st.tuples(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 60), st.integers(1, 60), st.booleans()),
    min_size=0,
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(boxes=boxes_st, queries=st.lists(st.tuples(st.integers(0, 2100), st.integers(0, 2100), st.integers(0, 80), st.integers(0, 80)), min_size=1, max_size=8),
       big=st.sampled_from([0, 100_000]))
def test_index_queries_equal_brute_force(tmp_path, boxes, queries, big):
    f = IIDFile()
    masks = []
    for i, (r, c, h, w, hollow) in enumerate(boxes):
        m = np.ones((h, w), bool)
        if hollow and h > 2 and w > 2:
            m[1:-1, 1:-1] = False
        f.add(f"k{i % 7}".encode(), b"d", (r + big, c + big, r + big + h, c + big + w), m)
        masks.append((r + big, c + big, m))
    path = tmp_path / "idx.iid"
    f.save(path, version=1)
    with iidschema.open(path) as g:
        assert isinstance(g._reader, Reader1) and "spatial_index" in g._reader.sections()
        for qr, qc, qh, qw in queries:
            qr, qc = qr + big, qc + big
            box = (qr, qc, qr + qh, qc + qw)
            brute_region = [
                i for i, (r, c, m) in enumerate(masks)
                if m[max(0, box[0] - r): max(0, box[2] - r), max(0, box[1] - c): max(0, box[3] - c)].any()
            ]
            assert [e.key for e in g.region(box)] == brute_region
            brute_at = [i for i, (r, c, m) in enumerate(masks) if 0 <= qr - r < m.shape[0] and 0 <= qc - c < m.shape[1] and m[qr - r, qc - c]]
            assert [e.key for e in g.at(qc, qr)] == brute_at
        for a in (b"k0", b"k3", b"nope"):
            assert [e.key for e in g.look_for(a)] == [i for i in range(len(boxes)) if f"k{i % 7}".encode() == a]


def test_region_component_flags(tmp_path):
    """Version-0 regions are components and are copied as they are on a
    version-0 re-save; version-1 regions may merge components."""
    m = np.array([[1, 1, 0, 1, 1]], bool)
    f = IIDFile()
    f.add(b"x", b"", (0, 0, 1, 5), m)
    f.save(tmp_path / "a0.iid", version=0)
    f.save(tmp_path / "a1.iid", version=1)
    with iidschema.open(tmp_path / "a0.iid") as g0, iidschema.open(tmp_path / "a1.iid") as g1:
        assert g0[0].seg.components and len(g0[0].seg.regions) == 2
        assert not g1[0].seg.components
