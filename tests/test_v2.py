"""Version 2: blocked sections, read lazily, and what a reader refuses.

The layout is in ``docs/FORMAT.md`` section 8 (``tests/test_format_doc_v2.py``
parses it independently from the document); the record, group and index
parsers are version 1's (their tests run on version 2 too).  Here: what is
particular to blocks -- opening reads no section, a read decompresses only
the blocks it needs, ``masks()`` reads the payloads with one unpack per part,
and damage to a block, its table row or its frame is an
:class:`IIDFormatError` at the file offset of that block, before anything is
allocated for it.
"""

from __future__ import annotations

import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import zstandard

import iidschema
from iidschema import IIDChecksumError, IIDFile, IIDFormatError, IIDLimitError, columnar, schema
from iidschema.blocked import assemble_section
from iidschema.source import BytesSource, CountingSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import iidfuzz  # noqa: E402


#: Entries of the shared file: enough blocks that one is a small part of it.
N = 20000


def _file(n: int, seed: int = 0) -> IIDFile:
    rng = np.random.default_rng(seed)
    f = IIDFile()
    shapes = rng.integers(1, 24, size=(n, 2))
    masks = [rng.random((int(h), int(w))) < 0.4 for h, w in shapes]
    boxes = np.array([[(7 * i) % 5000, (13 * i) % 4000, (7 * i) % 5000 + h, (13 * i) % 4000 + w]
                      for i, (h, w) in enumerate(shapes.tolist())])
    groups = ["tiny" if i in (5, 1500, 2900) else "rest" for i in range(n)]
    f.add_many([b"a%d" % i for i in range(n)], b"dom", boxes, masks, groups=groups)
    f.meta.data = {"n": n}
    return f


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("v2") / "f.iid"
    _file(N).save(path, version=2)
    return path.read_bytes()


def _counting(data: bytes) -> tuple[IIDFile, CountingSource]:
    src = CountingSource(BytesSource(data))
    return IIDFile(src), src


def _stored(data: bytes, name: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(file offset, block starts, block sizes) of blocked section ``name``."""
    with IIDFile(data) as f:
        blocked = f._reader.blocked(name)
        blocked.refs(0, blocked.count - 1)
        return blocked.offset, blocked.starts.copy(), blocked.sizes.copy()


# --------------------------------------------------------------------------
# Lazy reads
# --------------------------------------------------------------------------

def test_open_reads_the_header_codecs_and_the_lut_head_only(tmp_path):
    read = []
    for n in (10, 3000):
        path = tmp_path / f"{n}.iid"
        _file(n).save(path, version=2)
        f, src = _counting(path.read_bytes())
        assert len(f) == n
        read.append(src.bytes_read)
        with IIDFile(path) as g:
            sections = g._reader.sections()
        lut_off = sections["lut"][0]
        allowed = [(0, schema.header1_size(len(sections))), sections["codecs"], (lut_off, schema.BLOCKED_HEAD2_SIZE)]
        for o, length in src.requests:
            assert any(a <= o and o + length <= a + m for a, m in allowed), (o, length)
    assert read[0] == read[1]  # constant in the entry count


def test_fetch_one_entry_reads_one_block_of_each_section(v2):
    f, src = _counting(v2)
    opened = src.bytes_read
    (e,) = f.fetch(keys=[1500])
    assert e.iid.address == b"a1500"
    e.seg.mask()
    budget = 0
    for name in ("lut", "iids", "segs"):
        _, _, sizes = _stored(v2, name)
        budget += schema.BLOCKED_HEAD2_SIZE + 2 * 16 + 2 * int(sizes.max())  # a record may span two blocks
    assert src.bytes_read - opened <= budget
    assert src.bytes_read < len(v2) / 10


def test_a_tiny_group_reads_a_small_part_of_the_file(v2):
    f, src = _counting(v2)
    got = f.fetch(groups="tiny")
    assert [e.key for e in got] == [5, 1500, 2900]
    with IIDFile(v2) as g:
        want = g.fetch(groups="tiny")
        assert all(np.array_equal(a.seg.mask(), b.seg.mask()) for a, b in zip(got, want))
    assert src.bytes_read < len(v2) / 5


def test_reads_are_cached_per_block(v2):
    f, src = _counting(v2)
    f.fetch(keys=[100])[0].seg.mask()
    before = src.bytes_read
    f.fetch(keys=[101])[0].seg.mask()  # same LUT chunk, same blocks
    assert src.bytes_read == before


# --------------------------------------------------------------------------
# masks(): one unpack per part of back-to-back payloads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("part", [64, 1000, 1 << 20])
def test_masks_in_parts_equal_the_entries(v2, monkeypatch, part):
    monkeypatch.setattr(columnar, "V2_PART", part)
    with IIDFile(v2) as f:
        cols = f.masks(iids=True)
        assert len(cols.buffers) >= (2 if part < 1000 else 1)
        entries = f.fetch(everything=True)
        for i, e in enumerate(entries):
            assert np.array_equal(cols[i], e.seg.mask())
            assert tuple(cols.bboxes[i]) == e.seg.bbox and cols.areas[i] == e.seg.area
            assert cols.addresses[i] == e.iid.address and cols.domains[i] == e.iid.domain


def test_masks_of_scattered_keys_and_other_codecs(tmp_path):
    f = _file(300)
    for codec in ("rle", "zstd", "packbits"):
        path = tmp_path / f"{codec}.iid"
        f.save(path, version=2, codec=codec)
        with IIDFile(path) as g:
            keys = [0, 7, 8, 9, 150, 299]
            cols = g.masks(keys=keys)
            for i, e in enumerate(g.fetch(keys=keys)):
                assert np.array_equal(cols[i], e.seg.mask())


def test_masks_refuses_more_pixels_than_the_limit(v2):
    with IIDFile(v2) as f:
        with pytest.raises(IIDLimitError):
            f.masks(max_pixels=100)


# --------------------------------------------------------------------------
# Damage and hostile blocks
# --------------------------------------------------------------------------

def _patch(data: bytes, at: int, raw: bytes) -> bytes:
    return data[:at] + raw + data[at + len(raw) :]


def _read_all(data: bytes) -> None:
    with IIDFile(data) as f:
        for e in f.fetch(everything=True):
            e.seg.mask()
            e.iid.address
        f.groups.as_dict()
        f.at(10, 10)
        f.look_for([b"a1"])


def test_a_damaged_block_is_a_checksum_error_at_that_block(v2):
    off, starts, sizes = _stored(v2, "segs")
    at = off + int(starts[1]) + int(sizes[1]) // 2
    bad = _patch(v2, at, bytes([v2[at] ^ 0x40]))
    with pytest.raises(IIDChecksumError) as info:
        _read_all(bad)
    assert info.value.section == "segs" and info.value.offset == off + int(starts[1])
    with IIDFile(bad) as f:  # the other blocks still read
        assert f.fetch(keys=[0])[0].seg.mask() is not None


def test_a_frame_declaring_a_huge_size_is_refused_before_allocating(v2):
    """A block replaced by a valid zstd frame of 1 GiB of zeros (a few KB
    stored), its CRC fixed: refused from its declared size, not decompressed."""
    off, starts, sizes = _stored(v2, "iids")
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1 << 30)[: 1 << 30])
    assert len(bomb) < 64 * 1024
    with IIDFile(v2) as f:
        blocked = f._reader.blocked("iids")
        blocked.refs(0, blocked.count - 1)
    # Rebuild the iids section with this one block instead of block 0.
    stored = [bomb] + [v2[off + int(s) : off + int(s) + int(n)] for s, n in zip(starts[1:], sizes[1:])]
    section = assemble_section(blocked.raw_length, blocked.block_size, blocked.compression, blocked.shuffle, stored)
    data = iidfuzz._replace_section(v2, schema.SectionId.IIDS, b"".join(section))
    tracemalloc.start()
    try:
        with pytest.raises(IIDFormatError, match="declares") as info:
            _read_all(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20
    assert info.value.section == "iids" and info.value.offset < len(data)


def test_junk_after_a_frame_is_refused(v2):
    with IIDFile(v2) as f:
        meta_len = f._reader.sections()["meta"][1]
    assert meta_len  # (meta is plain: not touched)
    off, starts, sizes = _stored(v2, "segs")
    stored = [v2[off + int(s) : off + int(s) + int(n)] for s, n in zip(starts, sizes)]
    stored[0] += b"junk"
    with IIDFile(v2) as f:
        segs = f._reader.blocked("segs")
        section = assemble_section(segs.raw_length, segs.block_size, segs.compression, segs.shuffle, stored)
    data = iidfuzz._replace_section(v2, schema.SectionId.SEGS, b"".join(section))
    with pytest.raises(IIDFormatError, match="zstd frame") as info:
        _read_all(data)
    assert info.value.section == "segs"


@pytest.mark.parametrize("field,value,match", [
    ("raw_length", 2**40, "need"),
    ("block_size", 0, "block size"),
    ("block_size", schema.MAX_BLOCK_SIZE2 + 1, "block size"),
    ("compression", 7, "compression"),
    ("count", 2**31, "need"),
])
def test_a_bad_section_head_is_a_format_error(v2, field, value, match):
    off, _, _ = _stored(v2, "segs")
    fields = {name: o for name, o in zip(("raw_length", "block_size", "compression", "shuffle", "count"), (0, 8, 12, 14, 16))}
    fmt = {"raw_length": "<Q", "block_size": "<I", "compression": "<H", "shuffle": "<H", "count": "<I"}[field]
    data = iidfuzz.fix_checksums(_patch(v2, off + fields[field], struct.pack(fmt, value)))
    with pytest.raises(IIDFormatError, match=match) as info:
        _read_all(data)
    assert info.value.section == "segs" and off <= info.value.offset < len(data)
    # Unfixed, the head's CRC catches it first.
    with pytest.raises(IIDChecksumError):
        _read_all(_patch(v2, off + fields[field], struct.pack(fmt, value)))


@pytest.mark.parametrize("row,delta", [(0, 1), (1, -1), (1, 1 << 40), (-1, 1)])
def test_a_table_row_pointing_elsewhere_is_a_format_error(v2, row, delta):
    off, starts, sizes = _stored(v2, "segs")
    count = starts.size
    r = row % count
    at = off + schema.BLOCKED_HEAD2_SIZE + 16 * r
    start = struct.unpack_from("<Q", v2, at)[0]
    data = iidfuzz.fix_checksums(_patch(v2, at, struct.pack("<Q", (start + delta) % 2**64)))
    with pytest.raises(IIDFormatError) as info:
        _read_all(data)
    assert info.value.section == "segs" and info.value.offset < len(data)


def test_a_wrong_entry_count_is_refused_at_open(v2):
    data = iidfuzz.fix_checksums(_patch(v2, 16, struct.pack("<I", 2**32 - 1)))
    with pytest.raises(IIDFormatError, match="LUT holds"):
        IIDFile(data)


def test_errors_in_section_contents_carry_file_offsets(v2):
    """A LUT row whose payload runs past the segs content: the error names
    the LUT and the file offset of its block, the content offset in words."""
    n = 1024
    plane = schema.LUT_CHUNK_HEAD2 + (4 * 4 + 8 + 4) * n  # seg_length's first plane
    bad = iidfuzz.mutate_content(v2, "lut", 1, [("byte", plane + 3, 0xFF), ("byte", plane + 3 + n, 0xFF),
                                                 ("byte", plane + 3 + 2 * n, 0xFF)])
    with IIDFile(bad) as f:
        with pytest.raises(IIDFormatError) as info:
            f.fetch(keys=[1024 + 3])
    assert info.value.section == "lut" and info.value.offset < len(bad)


def test_a_file_saved_again_as_version_2_is_the_same(tmp_path, v2):
    """Deterministic writer: reading a version-2 file and saving it again
    gives the same bytes (also after every entry was fetched)."""
    for fetch in (False, True):
        out = tmp_path / f"again{fetch}.iid"
        with IIDFile(v2) as f:
            if fetch:
                f.fetch(everything=True)
            f.save(out, version=2)
        assert out.read_bytes() == v2


def test_iidschema_open_of_a_v2_file_is_version_2(tmp_path, v2):
    path = tmp_path / "v2.iid"
    path.write_bytes(v2)
    with iidschema.open(path) as f:
        assert f.version == 2 and len(f) == N and f.meta.data == {"n": N}


def test_a_decompression_bomb_in_a_section_is_refused_by_the_read_limit(v2, monkeypatch):
    """A groups section whose table claims 256 MiB of JSON, and truly holds
    it, stored as a few KiB of zstd: the read is refused from its size, not
    decompressed (a small file may hold far more than it stores)."""
    from iidschema import masks
    from iidschema.blocked import compress_section

    size = 256 << 20
    content = struct.pack("<I", size) + bytes(size)
    section = b"".join(compress_section([content], schema.MAX_BLOCK_SIZE2, 3, 2, 4))
    assert len(section) < 1 << 20
    data = iidfuzz._replace_section(v2, schema.SectionId.GROUPS, section)
    monkeypatch.setattr(masks, "MAX_MASK_PIXELS", 1 << 22)
    tracemalloc.start()
    try:
        with IIDFile(data) as f:
            with pytest.raises(IIDLimitError, match="groups"):
                f.groups.list()
            assert f.fetch(keys=[3])[0].iid.address == b"a3"  # the rest of the file reads
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_the_fast_paths_agree_with_the_declarations(v2):
    """The LUT chunks and block tables the reader decodes with numpy are what
    the construct declarations of iidschema.schema parse (one source of truth)."""
    from iidschema.reader2 import decode_chunk

    with IIDFile(v2) as f:
        reader = f._reader
        lut = reader.blocked("lut")
        for c in (0, lut.count - 1):
            block = lut.block(c)
            m = min(schema.LUT_CHUNK2, len(f) - c * schema.LUT_CHUNK2)
            parsed = schema.LutChunk2.parse(block, entries=m)
            rows = decode_chunk(block, m)
            for name in schema.LUT2_DTYPE.names:
                assert np.array_equal(parsed.rows[name], rows[name]), name
            lens = parsed.rows["seg_length"].astype(np.int64)
            assert rows["seg_offset"][0] == parsed.seg_base
            assert np.array_equal(rows["seg_offset"].astype(np.int64), parsed.seg_base + np.cumsum(lens) - lens)
        segs = reader.blocked("segs")
        segs.refs(0, segs.count - 1)
        table = schema.BlockTable2.parse(v2[segs.offset : segs.offset + segs.table_size])
        assert table.count == segs.count and table.raw_length == segs.raw_length and table.block_size == segs.block_size
        assert np.array_equal(table.blocks["offset"].astype(np.int64), segs.starts)
        assert np.array_equal(table.blocks["crc"].astype(np.int64), segs.crcs)


# --------------------------------------------------------------------------
# The two LUT decoders: one row alone, and whole chunks
# --------------------------------------------------------------------------

_LENGTH = st.one_of(st.integers(0, 300), st.sampled_from([2**32 - 1, 2**53 - 1, 2**53, 2**63, 2**64 - 1]),
                    st.integers(0, 2**64 - 1))


@settings(max_examples=150, deadline=None)
@given(m=st.integers(1, 40), data=st.data())
def test_one_row_decodes_as_its_chunk_does(m, data):
    """decode_rows (a random read) gathers a row from the chunk's byte matrix
    and sums the lengths before it; decode_chunk decodes every column.  They
    agree on every row, and refuse the same chunks (offsets past 2**64),
    whatever the lengths and bases."""
    from iidschema.reader2 import decode_chunk, decode_rows

    rows = np.zeros(m, dtype=schema.LUT2_DTYPE)
    for name in schema.LUT2_DTYPE.names:
        top = 2 ** (8 * schema.LUT2_DTYPE.fields[name][0].itemsize) - 1
        if name in ("iid_length", "seg_length"):
            values = data.draw(st.lists(_LENGTH.map(lambda v, top=top: min(v, top)), min_size=m, max_size=m))
        else:
            values = data.draw(st.lists(st.integers(0, top), min_size=m, max_size=m))
        rows[name] = values
    bases = data.draw(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
    block = schema.LUT_CHUNK_HEAD2_FMT.pack(*bases) + schema.records_to_planar(rows)
    idx = np.array(data.draw(st.lists(st.integers(0, m - 1), min_size=1, max_size=5)))
    try:
        whole = decode_chunk(block, m)
    except IIDFormatError:
        with pytest.raises(IIDFormatError, match="overflow"):
            decode_rows(block, m, idx)
        return
    assert decode_rows(block, m, idx).tobytes() == whole[idx].tobytes()
    for name in schema.LUT2_DTYPE.names:
        assert np.array_equal(whole[name], rows[name])


def test_worker_threads_of_masks_start_no_pools_of_their_own(v2, monkeypatch):
    """masks() reads its parts on two worker threads; a part's blocks are
    decompressed on its worker (a pool inside each worker doubled the CPU
    time of the bulk read)."""
    import threading

    from iidschema import blocked

    real = blocked.ThreadPoolExecutor
    started_by = []

    def spy(*args, **kwargs):
        started_by.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(blocked, "ThreadPoolExecutor", spy)
    monkeypatch.setattr(columnar, "V2_PART", 1 << 16)  # parts of many blocks (more than _PARALLEL_BLOCKS)
    monkeypatch.setattr(blocked, "_PARALLEL_BLOCKS", 0)
    with IIDFile(v2) as f:
        cols = f.masks()
        assert len(cols) == len(f) and len(cols.buffers) > 2
        assert all(started_by)  # only the calling thread's LUT read may use a pool
