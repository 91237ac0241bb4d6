"""medmask export/import proven with medmask 0.1.3 itself: MaskFile and
MaskArchive open what we write with the right label mapping; files medmask
writes import back; the archive index overflow of medmask is avoided."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import iidschema
from iidschema.demo import build_sample
from iidschema.errors import IIDLimitError
from iidschema.formats import IIDNoReaderError, read, write
from iidschema.formats import config as fconfig
from iidschema.formats._common import iid_from_name, iid_name

medmask = pytest.importorskip("medmask")
from medmask import MaskArchive, MaskFile, SegmentationMask  # noqa: E402
from spacetransformer import Space  # noqa: E402


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, "")


def small() -> iidschema.IIDFile:
    f = iidschema.IIDFile()
    f.add(b"liver", b"organs", (1, 1, 4, 5), np.ones((3, 4), bool), group="abdomen")
    f.add(b"spleen", b"", (5, 0, 7, 3), [[1, 1, 0], [0, 1, 1]])
    f.add(b"a/b%c#d \xff", b"x/y", (0, 6, 2, 8), [[1, 0], [0, 1]])
    f.meta.data = {"image": {"height": 9, "width": 10}, "study": 3}
    return f


def full(entry, shape):
    out = np.zeros(shape, bool)
    minr, minc, maxr, maxc = entry.seg.bbox
    out[minr:maxr, minc:maxc] = entry.seg.mask()
    return out


def test_names_are_readable_and_reversible():
    assert iid_name(b"liver", b"") == "liver"
    assert iid_name(b"liver", b"organs") == "organs/liver"
    assert iid_name("f\u00e9e".encode(), b"") == "f\u00e9e"
    name = iid_name(b"a/b%c#d \xff", b"x/y")
    assert name == "x%2Fy/a%2Fb%25c%23d %FF"
    for address, domain in [(b"a/b%c#d \xff", b"x/y"), (b"", b""), (b"\x00\n", b"\xfe"), ("\u6771".encode(), b"d")]:
        assert iid_from_name(iid_name(address, domain)) == (address, domain)
        assert iid_from_name(iid_name(address, domain) + "#12") == (address, domain)


def test_maskfile_opens_our_msk(tmp_path):
    f = small()
    path = tmp_path / "f.msk"
    write(f, path)
    raw = path.read_bytes()
    assert raw[:4] == b"MSK1"
    hdr = struct.unpack("<4s2B B 6Q 7x", raw[:62])
    assert hdr[4] == 62  # the space section starts right after a 62-byte header (not 64 as documented)
    seg = MaskFile(str(path), mode="r").read()
    assert seg.data.shape == (1, 9, 10) and seg.data.dtype == np.uint8
    mapping = dict(seg.mapping.items())
    assert mapping == {iid_name(e.iid.address, e.iid.domain): e.key + 1 for e in f}
    assert mapping["organs/liver"] == 1 and mapping["spleen"] == 2
    for e in f:
        assert np.array_equal(seg.data[0] == e.key + 1, full(e, (9, 10)))
    assert seg.space.shape == (1, 9, 10)
    back = read(path)
    assert [(e.iid.address, e.iid.domain, e.seg.bbox) for e in back] == [(e.iid.address, e.iid.domain, e.seg.bbox) for e in f]
    assert back.meta.data == f.meta.data and back.groups.keys("abdomen").tolist() == [0]


def test_overlaps_in_a_maskfile_are_refused(tmp_path):
    f = small()
    f.add(b"tumour", b"organs", (2, 2, 3, 3), [[1]])
    with pytest.raises(IIDLimitError, match="overlap"):
        write(f, tmp_path / "o.msk")
    write(f, tmp_path / "o.msk", overlap="last")
    assert (MaskFile(str(tmp_path / "o.msk")).read().data[0, 2, 2]) == 4


def test_maskarchive_opens_our_layers(tmp_path):
    f = build_sample()  # overlapping: trees over the sky, leaves over crowns...
    path = tmp_path / "demo.mska"
    write(f, path)
    raw = path.read_bytes()
    assert raw[:4] == b"MSKA"
    assert struct.unpack("<4s2B B 7Q27x", raw[:90])[4] == 90  # header is 90 bytes (docstring says 100)
    archive = MaskArchive(str(path), mode="r")
    names = archive.all_names()
    assert len(names) >= 2 and names[0] == "layer_000"
    masks = archive.read_all_masks()
    seen = {}
    for name, seg in masks.items():
        assert seg.data.shape == (1, 480, 640)
        for label_name, label in seg.mapping.items():
            seen[label] = (name, label_name, seg.data[0] == label)
    assert sorted(seen) == [e.key + 1 for e in f]
    for e in f:
        _, label_name, got = seen[e.key + 1]
        assert iid_from_name(label_name) == (e.iid.address, e.iid.domain)
        assert np.array_equal(got, full(e, (480, 640)))
    side = json.loads((tmp_path / "demo.mska.iid.json").read_text())
    assert {x["volume"] for x in side["entries"]} == set(names)


def test_maskarchive_one_volume_per_entry(tmp_path):
    f = small()
    write(f, tmp_path / "e.mska", layout="entry")
    archive = MaskArchive(str(tmp_path / "e.mska"), mode="r")
    assert archive.all_names() == ["entry_000000", "entry_000001", "entry_000002"]
    for e, (name, seg) in zip(f, archive.read_all_masks().items()):
        assert seg.data.dtype == bool and dict(seg.mapping.items()) == {iid_name(e.iid.address, e.iid.domain): 1}
        assert np.array_equal(seg.data[0], full(e, (9, 10)))


@pytest.mark.parametrize("layout", ["layers", "entry"])
def test_archive_volumes_are_made_one_at_a_time(tmp_path, monkeypatch, layout):
    # Each volume is a whole-image array: at most one is alive while the
    # archive is written (a 100 000-entry file's layers took 6.5 GB at once).
    import gc
    import weakref

    alive: list = []
    real = MaskArchive.add_segmask

    def add(self, segmask, name):
        gc.collect()
        alive.append(sum(1 for r in made if r() is not None))
        return real(self, segmask, name)

    made: list = []
    real_zeros = np.zeros

    class Volume(np.ndarray):  # a weakref-able marker for whole-image arrays
        pass

    def zeros(shape, dtype=float, **kw):
        out = real_zeros(shape, dtype=dtype, **kw)
        if tuple(np.atleast_1d(shape)) == (480, 640):
            out = out.view(Volume)
            made.append(weakref.ref(out))
        return out

    monkeypatch.setattr(MaskArchive, "add_segmask", add)
    monkeypatch.setattr(np, "zeros", zeros)
    write(build_sample(), tmp_path / "d.mska", layout=layout)
    monkeypatch.undo()
    assert len(alive) >= 2 and max(alive) == 1
    assert MaskArchive(str(tmp_path / "d.mska"), mode="r").all_names()


@pytest.mark.parametrize("with_sidecar", [True, False])
def test_archive_volumes_are_read_one_at_a_time(tmp_path, monkeypatch, with_sidecar):
    f = build_sample()
    write(f, tmp_path / "d.mska", sidecar=with_sidecar)
    loaded: list[str] = []
    real = MaskArchive.load_segmask

    def load(self, name):
        loaded.append(name)
        return real(self, name)

    monkeypatch.setattr(MaskArchive, "read_all_masks", lambda self: pytest.fail("all volumes loaded at once"))
    monkeypatch.setattr(MaskArchive, "load_segmask", load)
    g = read(tmp_path / "d.mska")
    names = MaskArchive(str(tmp_path / "d.mska"), mode="r").all_names()
    assert sorted(loaded) == sorted(names) and len(names) >= 2  # each once
    assert sorted(e.seg.area for e in g) == sorted(e.seg.area for e in f)  # (without the sidecar: layer by layer)
    if with_sidecar:
        assert [(e.iid.address, e.seg.bbox) for e in g] == [(e.iid.address, e.seg.bbox) for e in f]
        assert all(np.array_equal(a.seg.mask(), b.seg.mask()) for a, b in zip(f, g))


def test_long_names_do_not_corrupt_the_archive_index(tmp_path):
    f = iidschema.IIDFile()
    for i in range(4):
        f.add(b"n" * 3000 + bytes([48 + i]), b"", (i, i, i + 2, i + 2), np.ones((2, 2), bool))
    write(f, tmp_path / "long.mska", layout="entry")
    masks = MaskArchive(str(tmp_path / "long.mska"), mode="r").read_all_masks()
    assert len(masks) == 4
    for e, seg in zip(f, masks.values()):
        assert np.array_equal(seg.data[0], full(e, (5, 5)))
    # what medmask does by itself with such names (why the writer sizes the index first)
    space = Space(shape=(1, 5, 5))
    naive = MaskArchive(str(tmp_path / "naive.mska"), mode="w", space=space)
    with pytest.raises(Exception):
        for i in range(3):
            naive.add_segmask(SegmentationMask(np.ones((1, 5, 5), np.uint8), {"n" * 3000 + str(i): 1}, space=space), f"m{i}")
        MaskArchive(str(tmp_path / "naive.mska"), mode="r").read_all_masks()


def test_files_written_by_medmask_import(tmp_path):
    seg = SegmentationMask.lazy_init(8, shape=(1, 6, 7))
    liver = np.zeros((1, 6, 7), bool)
    liver[0, 1:3, 1:4] = True
    spleen = np.zeros((1, 6, 7), bool)
    spleen[0, 4:6, 5:7] = True
    seg.add_label(liver, 1, "liver")
    seg.add_label(spleen, 2, "spleen")
    seg.save(str(tmp_path / "ct.msk"))
    f = read(tmp_path / "ct.msk")
    assert [(e.iid.address, e.iid.domain, e.seg.bbox) for e in f] == [(b"liver", b"", (1, 1, 3, 4)), (b"spleen", b"", (4, 5, 6, 7))]
    assert f.meta.data["image"] == {"height": 6, "width": 7} and f.meta.data["medmask"]["space"]["shape"]

    space = Space(shape=(1, 6, 7))
    archive = MaskArchive(str(tmp_path / "ct.mska"), mode="w", space=space)
    archive.add_segmask(SegmentationMask(seg.data.copy(), {"liver": 1, "spleen": 2}, space=space), "organs")
    vessels = np.zeros((1, 6, 7), np.uint8)
    vessels[0, 0, :] = 1
    archive.add_segmask(SegmentationMask(vessels, {"aorta": 1}, space=space), "vessels")
    g = read(tmp_path / "ct.mska")
    assert [e.iid.address for e in g] == [b"liver", b"spleen", b"aorta"]
    assert g.groups.keys("organs").tolist() == [0, 1] and g.groups.keys("vessels").tolist() == [2]

    vol = np.zeros((3, 4, 4), np.uint8)
    vol[1, 1:3, 1:3] = 5
    SegmentationMask(vol, {"lesion": 5}).save(str(tmp_path / "vol.msk"))
    with pytest.raises(IIDNoReaderError, match="3 slices.*z=<slice>"):
        read(tmp_path / "vol.msk")
    h = read(tmp_path / "vol.msk", z=1)
    assert [(e.iid.address, e.seg.bbox) for e in h] == [(b"lesion", (1, 1, 3, 3))]
