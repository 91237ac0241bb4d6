"""Lazy reading: opening parses the header only, and a fetch reads only the
bytes of the entries, LUT rows and sections it involves.

Bytes are counted with :class:`iidschema.source.CountingSource`, which hides
the zero-copy buffer of the source it wraps so that every byte the reader
takes goes through it and is recorded (a remote source would behave alike).
Every test runs on a version-0 file and on the same file saved as version 1.
"""

from __future__ import annotations

import gc
import mmap
import time
from dataclasses import dataclass

import numpy as np
import pytest

from iidschema import IIDFile, IIDFormatError, schema
from iidschema.source import BytesSource, CountingSource, MmapSource
from iidschema.writer import write_v0

TINY = (3, 1717, 4242)
VERSIONS = [0, 1]  # byte-level layouts; version 2 reads by blocks: tests/test_v2.py



class _Buffer:
    def __init__(self):
        self.parts = []

    def write(self, b):
        self.parts.append(bytes(b))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def _build(n: int, tiny=TINY, big_groups: bool = True) -> bytes:
    """A version-0 file of ``n`` 10x10 noise masks; group 'tiny' holds ``tiny``."""
    rng = np.random.default_rng(n)
    f = IIDFile()
    m = rng.random((n, 10, 10)) < 0.5
    for i in range(n):
        r, c = (i * 7) % 600, (i * 13) % 700
        groups = []
        if i in tiny:
            groups.append("tiny")
        if big_groups:
            groups.append("even" if i % 2 == 0 else "odd")
        f.add(b"addr%d" % i, b"dom", (r, c, r + 10, c + 10), m[i], group=groups)
    f.meta.data = {"n": n}
    out = _Buffer()
    write_v0(out, f._records(), len(f), f.groups.as_dict(), f.meta.data)
    return out.getvalue()


def _as_version(data: bytes, version: int, tmp) -> bytes:
    if version == 0:
        return data
    p = tmp / f"v{version}.iid"
    with IIDFile(data) as f:
        f.save(p, version=version)
    return p.read_bytes()


@dataclass
class Layout:
    """Where things are in a file, found by an independent (uncounted) open."""

    data: bytes
    version: int
    sections: dict
    lut: np.ndarray  # a copy of the LUT rows
    header_size: int

    @property
    def count(self) -> int:
        return len(self.lut)

    @property
    def row(self) -> int:
        return self.lut.dtype.itemsize

    def section(self, name: str) -> tuple[int, int]:
        return self.sections[name]

    def record(self, key: int, kind: str) -> tuple[int, int]:
        base = self.sections["iids" if kind == "iid" else "segs"][0]
        return base + int(self.lut[key][kind]["offset"]), int(self.lut[key][kind]["length"])

    def lut_rows(self, key: int) -> list[tuple[int, int]]:
        """Bytes of the LUT a reader may read for ``key``: its row (version 0);
        the checksum block holding it and that block's CRC (version 1)."""
        off = self.sections["lut"][0]
        if self.version == 0:
            return [(off + key * self.row, self.row)]
        b = key // schema.LUT_BLOCK
        lo, hi = b * schema.LUT_BLOCK, min(self.count, (b + 1) * schema.LUT_BLOCK)
        return [(off + lo * self.row, (hi - lo) * self.row), (off + self.count * self.row + 4 * b, 4)]


def _layout(data: bytes) -> Layout:
    with IIDFile(data) as f:
        version = f.version
        sections = f._reader.sections()
        lut = np.array(f.lut)
    if version == 0:
        hsize = schema.HEADER0_SIZE
    else:
        hsize = schema.header1_size(schema.HeaderFixed1.parse(data[: schema.HEADER1_FIXED_SIZE]).section_count)
    return Layout(data, version, sections, lut, hsize)


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"v{v}" for v in VERSIONS])
def version(request) -> int:
    return request.param


@pytest.fixture(scope="module")
def small(version, tmp_path_factory) -> bytes:
    return _as_version(_build(10, tiny=(1, 3, 7)), version, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def large_v0() -> bytes:
    return _build(5000)


@pytest.fixture(scope="module")
def large(version, large_v0, tmp_path_factory) -> bytes:
    return _as_version(large_v0, version, tmp_path_factory.mktemp("large"))


def _open_counting(data: bytes) -> tuple[IIDFile, CountingSource]:
    src = CountingSource(BytesSource(data))
    return IIDFile(src), src


def _covered(requests) -> np.ndarray:
    """Sorted unique byte offsets covered by ``requests``."""
    requests = [(o, n) for o, n in requests if n > 0]
    if not requests:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate([np.arange(o, o + n, dtype=np.int64) for o, n in requests]))


def _records_of(lay: Layout, keys, kinds=("iid", "seg")) -> list[tuple[int, int]]:
    return [lay.record(k, kind) for k in keys for kind in kinds]


# --------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------

def test_open_reads_the_header_only(small, large):
    f10, s10 = _open_counting(small)
    f5k, s5k = _open_counting(large)
    assert len(f10) == 10 and len(f5k) == 5000
    assert s10.bytes_read == s5k.bytes_read  # independent of the entry count
    lay = _layout(large)
    if lay.version == 0:
        assert s5k.bytes_read <= 64  # the 48-byte header (+ the peeked version)
        assert all(o + n <= schema.HEADER0_SIZE for o, n in s5k.requests)
    else:
        # The header and its section table (+ the tiny codec list it checks).
        allowed = _covered([(0, lay.header_size)] + ([lay.section("codecs")] if "codecs" in lay.sections else []))
        assert np.setdiff1d(_covered(s5k.requests), allowed).size == 0
        assert s5k.bytes_read <= 1024


@pytest.mark.parametrize("version", [0, 1, 2], ids=["v0", "v1", "v2"])
def test_open_does_not_grow_with_entry_count(tmp_path, version):
    paths = {}
    for n in (100, 20000):
        paths[n] = tmp_path / f"n{n}.iid"
        paths[n].write_bytes(_as_version(_build(n, tiny=(), big_groups=False), version, tmp_path))

    def best(path) -> float:
        times = []
        for _ in range(30):
            t = time.perf_counter()
            f = IIDFile(path)
            times.append(time.perf_counter() - t)
            f.close()
        return min(times)

    best(paths[100])  # warm up
    small_t, large_t = best(paths[100]), best(paths[20000])
    assert large_t < 5 * small_t + 1e-3, (small_t, large_t)


# --------------------------------------------------------------------------
# Selective reads
# --------------------------------------------------------------------------

def test_group_fetch_reads_no_unrequested_record(large):
    lay = _layout(large)
    f, src = _open_counting(large)
    got = f.fetch(groups=["tiny"])
    assert [e.key for e in got] == sorted(TINY)
    for e in got:
        assert e.iid.address == b"addr%d" % e.key and e.seg.area > 0
    touched = _covered(src.requests)
    forbidden = _covered(_records_of(lay, [k for k in range(5000) if k not in TINY]))
    hit = np.intersect1d(touched, forbidden)
    assert hit.size == 0, f"read {hit.size} bytes of IID/segment records of entries that were not requested"


def test_group_fetch_reads_only_the_lut_rows_it_needs(large):
    lay = _layout(large)
    f, src = _open_counting(large)
    f.fetch(groups=["tiny"])
    lut_rows = [r for k in TINY for r in lay.lut_rows(k)]
    allowed = _covered([(0, lay.header_size), lay.section("groups"), *lut_rows, *_records_of(lay, TINY)]
                       + [lay.section(s) for s in ("codecs", "block_crcs") if s in lay.sections])
    touched = _covered(src.requests)
    extra = np.setdiff1d(touched, allowed)
    lut_off, lut_len = lay.section("lut")
    lut_extra = extra[(extra >= lut_off) & (extra < lut_off + lut_len)]
    assert lut_extra.size == 0, (
        f"fetching 3 entries read {lut_extra.size} bytes of LUT rows of other entries (the LUT is {lut_len} bytes)"
    )
    assert extra.size == 0, f"read {extra.size} bytes outside the header, the groups section and the 3 entries"


def test_group_fetch_reads_a_small_fraction_of_the_file(large):
    f, src = _open_counting(large)
    f.fetch(groups=["tiny"])
    assert src.bytes_read < 0.05 * len(large), (src.bytes_read, len(large))


def test_fetch_iids_only_reads_no_segment(large):
    lay = _layout(large)
    f, src = _open_counting(large)
    (e,) = f.fetch(keys=[1234], iids=True, segs=False)
    assert e.iid.address == b"addr1234"
    assert not e.seg_loaded
    segs = _covered([lay.section("segs")])
    assert np.intersect1d(_covered(src.requests), segs).size == 0


def test_meta_and_groups_read_only_their_sections(large):
    lay = _layout(large)
    f, src = _open_counting(large)
    assert f.meta.data == {"n": 5000}
    assert f.groups.list() == ["even", "odd", "tiny"]
    # Version 1: block_crcs holds the block checksums of the groups section.
    allowed = _covered([(0, lay.header_size), lay.section("meta"), lay.section("groups")]
                       + [lay.section(s) for s in ("codecs", "block_crcs") if s in lay.sections])
    assert np.setdiff1d(_covered(src.requests), allowed).size == 0
    # Names need only the group table, not the keys of the three groups.
    g_off, g_len = lay.section("groups")
    groups_read = np.intersect1d(_covered(src.requests), _covered([(g_off, g_len)]))
    assert groups_read.size <= 4096 < g_len, (groups_read.size, g_len)


def test_second_fetch_reads_nothing_new(large):
    f, src = _open_counting(large)
    f.fetch(keys=[5, 6])
    before = src.bytes_read
    f.fetch(keys=[5, 6])
    [e.seg.bbox for e in f.fetch(keys=[6, 5])]
    assert src.bytes_read == before


def test_at_reads_records_of_candidates_only(large):
    """``at()`` finds candidates from bboxes (segment heads in version 0, the
    LUT / spatial index in version 1) and reads only the records of entries
    whose bbox holds the pixel."""
    lay = _layout(large)
    f, src = _open_counting(large)
    x, y = 5, 5
    hits = [e.key for e in f.at(x, y)]
    with IIDFile(large) as g:
        boxes = [e.seg.bbox for e in g.fetch(everything=True)]
    candidates = {k for k, (r0, c0, r1, c1) in enumerate(boxes) if r0 <= y < r1 and c0 <= x < c1}
    assert set(hits) <= candidates and candidates
    head = schema.SEG_HEAD0.size if lay.version == 0 else 0
    tails = []
    for k in range(5000):
        if k not in candidates:
            off, n = lay.record(k, "seg")
            tails.append((off + head, n - head))  # bytes past a version-0 head
    touched = _covered(src.requests)
    assert np.intersect1d(touched, _covered(tails)).size == 0
    # No IID record was needed to answer.
    assert np.intersect1d(touched, _covered([lay.section("iids")])).size == 0


# --------------------------------------------------------------------------
# The LUT view and close()
# --------------------------------------------------------------------------

def _base_chain(arr):
    chain, obj = [], arr
    while obj is not None and len(chain) < 10:
        chain.append(obj)
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    return chain


def test_lut_is_a_read_only_zero_copy_view_of_the_map(tmp_path, small, version):
    p = tmp_path / "s.iid"
    p.write_bytes(small)
    f = IIDFile(p)
    lut = f.lut
    assert isinstance(f._reader.source, MmapSource)
    assert any(isinstance(o, mmap.mmap) for o in _base_chain(lut)), [type(o) for o in _base_chain(lut)]
    the_map = f._reader.source._map
    assert np.shares_memory(lut, np.frombuffer(the_map, dtype=np.uint8))
    assert lut.flags.writeable is False
    with pytest.raises(ValueError):
        lut[0] = lut[1]
    assert lut.dtype == (schema.LUT0_DTYPE if version == 0 else schema.LUT1_DTYPE)
    assert len(lut) == 10
    if version == 0:
        assert lut["key"].tolist() == list(range(10))
    f.close()


def test_close_while_a_lut_view_is_held(tmp_path, small):
    p = tmp_path / "s.iid"
    p.write_bytes(small)
    f = IIDFile(p)
    lut = f.lut
    copy = np.array(lut)
    column = lut["seg"]["length"]
    f.close()  # no BufferError
    f.close()  # idempotent
    assert np.array_equal(lut, copy)  # still readable
    assert column.tolist() == copy["seg"]["length"].tolist()
    del lut, column
    gc.collect()


def test_loaded_entries_stay_usable_after_close(tmp_path, small):
    p = tmp_path / "s.iid"
    p.write_bytes(small)
    with IIDFile(p) as f:
        e = f.fetch(keys=[2])[0]
        mask = e.seg.mask()
        g = f.groups.list()
        f.groups.keys("tiny")
    assert e.iid.address == b"addr2" and g == ["even", "odd", "tiny"]
    np.testing.assert_array_equal(e.seg.mask(), mask)
    assert f.groups.keys("tiny").tolist() == [1, 3, 7]  # already read
    assert "even" in f.groups and len(f.groups) == 3  # the table was read; "even"'s keys were not


@pytest.mark.parametrize("source", ["mmap", "bytes"])
@pytest.mark.parametrize(
    "what,warm",
    [("iid", False), ("seg", False), ("meta", False), ("groups", False), ("lut", False), ("iid", True), ("seg", True)],
    ids=["iid", "seg", "meta", "groups", "lut", "iid-after-a-fetch", "seg-after-a-fetch"],
)
def test_reading_after_close_says_closed_not_damaged(tmp_path, small, version, what, warm, source):
    """After close(), reading an unloaded part is a usage error (ValueError,
    like a closed Python file): it must not report the intact file as
    damaged (IIDFormatError) nor leak struct.error."""
    p = tmp_path / "s.iid"
    p.write_bytes(small)
    f = IIDFile(p) if source == "mmap" else IIDFile(small)
    if warm:
        f.fetch(keys=[0])
    f.close()
    with pytest.raises(ValueError) as info:
        if what == "iid":
            f[5].iid
        elif what == "seg":
            f[5].seg
        elif what == "meta":
            f.meta.data
        elif what == "groups":
            f.groups.list()
        else:
            f.lut
    assert not isinstance(info.value, IIDFormatError), f"closed file reported as damaged: {info.value}"
    assert "closed" in str(info.value).lower()


def test_save_after_close_says_closed_and_writes_nothing(tmp_path, small):
    p = tmp_path / "s.iid"
    p.write_bytes(small)
    with IIDFile(p) as f:
        f.fetch(keys=[0])
    out = tmp_path / "out.iid"
    with pytest.raises(ValueError) as info:
        f.save(out)
    assert not isinstance(info.value, IIDFormatError), f"closed file reported as damaged: {info.value}"
    assert "closed" in str(info.value).lower()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.iid"]
