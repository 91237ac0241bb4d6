"""The bulk read path (``iidschema.bulk``) against the one-record path.

``fetch()`` of many entries parses record heads with numpy, decodes region
payloads codec by codec (``iidschema.codecs.bulk.decode_flat``) and makes
objects on first access.  It must be indistinguishable from reading the
records one by one: same IIDs, bboxes, areas, regions, masks; and on a
damaged file, an ``IIDError`` whenever the one-record path raises one.  Each
test reads the same bytes twice, with the bulk threshold at 1 (everything in
bulk) and out of reach (everything one by one).
"""

from __future__ import annotations

import os
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import bulk
from iidschema.codecs import get_codec
from iidschema.codecs.bulk import decode_flat
from iidschema.errors import IIDCodecError
from iidschema.strategies import file_bytes, masks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import iidfuzz  # noqa: E402

REGRESSIONS = Path(__file__).parent / "regressions"
SEEDS = iidfuzz.seed_files(include_corpus=True)


def read_all(data: bytes, bulk_min: int, monkeypatch: Any) -> tuple:
    """Everything a caller can see of a file, or the error class it raised."""
    monkeypatch.setattr(bulk, "BULK_MIN", bulk_min)
    try:
        f = iidschema.IIDFile(data)
        out = []
        for e in f.fetch(everything=True):
            seg = e.seg
            m = seg.mask()
            out.append((
                e.key, e.iid.domain, e.iid.address, e.iid.key, seg.key, seg.bbox, seg.area, seg.components,
                m.shape, m.dtype.str, np.packbits(m).tobytes(),
                [(r.bbox, r.codec, bytes(r.payload)) for r in seg.regions],
            ))
        f.close()
        return ("ok", out)
    except iidschema.IIDError as exc:
        return ("error", type(exc).__name__)


def assert_same(data: bytes, monkeypatch: Any) -> tuple:
    one = read_all(data, 10**9, monkeypatch)
    many = read_all(data, 1, monkeypatch)
    if one[0] == "ok" or many[0] == "ok":
        assert one == many
    return one


#: CI runs a bounded number; a long run: IIDSCHEMA_BULK_EXAMPLES=2000 pytest tests/test_bulk_read.py
EXAMPLES = int(os.environ.get("IIDSCHEMA_BULK_EXAMPLES", "40"))
_settings = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                     database=None)


@_settings
@given(data=st.one_of(file_bytes(version=0, max_entries=12, max_side=24), file_bytes(version=1, max_entries=12, max_side=24),
                      file_bytes(version=1, codec="rle", max_entries=12, max_side=24),
                      file_bytes(version=1, codec="zstd", max_entries=8, max_side=24),
                      file_bytes(version=1, codec="packbits", max_entries=8, max_side=24),
                      file_bytes(version=2, max_entries=12, max_side=24),
                      file_bytes(version=2, codec="rle", max_entries=8, max_side=24)))
def test_bulk_reads_what_the_record_parser_reads(data: bytes, monkeypatch_module: Any) -> None:
    assert assert_same(data, monkeypatch_module)[0] == "ok"


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files(name: str, monkeypatch: Any) -> None:
    assert assert_same(SEEDS[name], monkeypatch)[0] == "ok"


@_settings
@given(data=st.data())
def test_damaged_files_fail_alike(data: Any, monkeypatch_module: Any) -> None:
    """A mutated file gives the same data both ways, or an IIDError both ways."""
    name = data.draw(st.sampled_from(sorted(SEEDS)))
    base = SEEDS[name]
    fields = iidfuzz.field_map(base)
    n = len(base)
    ops = [
        st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(0, 7)),
        st.tuples(st.just("byte"), st.integers(0, n - 1), st.integers(0, 255)),
        st.tuples(st.just("truncate"), st.integers(0, n)),
    ]
    if fields:
        ops.append(st.tuples(st.just("field"), st.sampled_from(fields), st.sampled_from(iidfuzz.SPECIAL_VALUES)))
    mutations = data.draw(st.lists(st.one_of(ops), min_size=1, max_size=3))
    fix = iidfuzz._u32(base, 0) == 1 and data.draw(st.booleans())
    assert_same(iidfuzz.mutate(base, mutations, fix), monkeypatch_module)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _workload_file(version: int, codec: str = "auto", n: int = 300) -> bytes:
    """Blobs, multi-island masks, thin lines and masks that do not fill their
    bbox (so that version 1 stores a smaller region), in one file."""
    rng = np.random.default_rng(7)
    f = iidschema.IIDFile()
    for i in range(n):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        kind = i % 4
        if kind == 0:
            m = np.ones((h, w), bool)
        elif kind == 1:
            m = rng.random((h, w)) < 0.1
        elif kind == 2:
            m = np.zeros((h, w), bool)
            m[h // 2, :] = True
        else:
            m = np.zeros((h + 4, w + 4), bool)
            m[2:-2, 2:-2] = rng.random((h, w)) < 0.7
        y, x = int(rng.integers(0, 500)), int(rng.integers(0, 500))
        f.add(b"a%d" % i, b"dom" if i % 3 else b"", (y, x, y + m.shape[0], x + m.shape[1]), m, group="g%d" % (i % 2))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "w.iid"
        f.save(out, version=version, codec=codec if version else "auto")
        data = out.read_bytes()
        f.close()
    return data


@pytest.mark.parametrize("version,codec", [(0, "auto"), (1, "auto"), (1, "rle"), (1, "zstd"), (1, "packbits")])
def test_mixed_workload(version: int, codec: str, monkeypatch: Any) -> None:
    assert assert_same(_workload_file(version, codec), monkeypatch)[0] == "ok"


@pytest.mark.parametrize("chunk,slice_above", [(7, 0), (7, 10**9)])
def test_composing_paths_agree(chunk: int, slice_above: int, monkeypatch: Any) -> None:
    """Masks composed from several (or smaller) regions: placed pixel by
    pixel in tiny passes, or region by region with slices; the same."""
    monkeypatch.setattr(bulk, "PLACE_CHUNK", chunk)
    monkeypatch.setattr(bulk, "PLACE_SLICE", slice_above)
    for version in (0, 1):
        assert assert_same(_workload_file(version, n=120), monkeypatch)[0] == "ok"


def test_entries_outlive_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.iid"
    path.write_bytes(_workload_file(1))
    f = iidschema.IIDFile(path)
    entries = f.fetch(everything=True)
    expected = [e.seg.mask() for e in entries]
    f.close()
    assert all(np.array_equal(e.seg.mask(), m) for e, m in zip(entries, expected))
    assert all(isinstance(e.iid.address, bytes) for e in entries)
    assert all(len(e.seg.regions) >= 1 for e in entries if e.seg.area)


def test_masks_are_fresh_arrays(monkeypatch: Any) -> None:
    monkeypatch.setattr(bulk, "BULK_MIN", 1)
    f = iidschema.IIDFile(_workload_file(1))
    e = f.fetch(everything=True)[0]
    m = e.seg.mask()
    before = m.copy()
    m[...] = ~m
    assert np.array_equal(e.seg.mask(), before)
    assert m.flags.writeable and m.flags.c_contiguous


def test_damage_outside_the_fetched_records_is_not_reported(monkeypatch: Any) -> None:
    """The bulk path checks a whole section's CRC when it reads much of it;
    damage in a record it does not read must still go unnoticed."""
    monkeypatch.setattr(bulk, "BULK_MIN", 1)
    data = bytearray(_workload_file(1))
    f = iidschema.IIDFile(bytes(data))
    last = f._reader._locate_rows(np.array([len(f) - 1]), "seg")[0][0]
    data[int(last) + 12] ^= 0xFF  # inside the last segment record
    f = iidschema.IIDFile(bytes(data))
    entries = f.fetch(keys=list(range(len(f) - 1)))
    assert len([e.seg.mask() for e in entries]) == len(f) - 1
    with pytest.raises(iidschema.IIDChecksumError):
        f.fetch(keys=[len(f) - 1])[0].seg.mask()


def test_decompression_bombs_decode_lazily(monkeypatch: Any) -> None:
    """Regions that claim far more pixels than their bytes could honestly
    hold are not decoded by fetch (they decode one by one on mask())."""
    monkeypatch.setattr(bulk, "BULK_MIN", 1)
    data = (REGRESSIONS / "v1-overlapping-regions-amplification.iid").read_bytes()
    tracemalloc.start()
    try:
        f = iidschema.IIDFile(data)
        entries = f.fetch(everything=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(data) + 2**20
    assert all(e.seg._batch.state[e.seg._bi] == bulk.SegmentBatch.LAZY for e in entries if e.seg.regions)


# -- codec level ---------------------------------------------------------------


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(masks(max_side=20), min_size=0, max_size=12), st.sampled_from(["packbits", "rle", "zstd"]), st.booleans())
def test_decode_flat_matches_decode(ms: list, name: str, gaps: bool) -> None:
    codec = get_codec(name)
    payloads = [codec.encode(m) for m in ms]
    gap = b"\xff\x80" if gaps else b""
    raw = b"".join(gap + p for p in payloads)
    lens = np.array([len(p) for p in payloads], dtype=np.int64)
    offs = np.cumsum(lens + len(gap)) - lens
    hs = np.array([m.shape[0] for m in ms], dtype=np.int64)
    ws = np.array([m.shape[1] for m in ms], dtype=np.int64)
    bits, starts = decode_flat(codec, raw, offs, lens, hs, ws)
    for m, s in zip(ms, starts.tolist()):
        assert np.array_equal(bits[s : s + m.size].reshape(m.shape), m.astype(bool))


@pytest.mark.parametrize(
    "payload,shape",
    [
        (b"", (1, 1)),  # empty
        (b"\x80", (1, 1)),  # truncated varint
        (b"\x01\x00\x01", (1, 3)),  # zero run after the first
        (b"\x80\x00", (1, 1)),  # non-canonical
        (b"\x03", (1, 2)),  # runs do not add up
        (b"\x05", (1, 2)),  # a run longer than the mask
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", (1, 1)),  # overlong
    ],
)
def test_decode_flat_refuses_what_rle_decode_refuses(payload: bytes, shape: tuple) -> None:
    assert_flat_refuses("rle", payload, shape)


def assert_flat_refuses(name: str, payload: bytes, shape: tuple) -> None:
    """``payload`` is refused by the codec's ``decode``, and by
    ``decode_flat`` between two good payloads."""
    codec = get_codec(name)
    with pytest.raises(IIDCodecError):
        codec.decode(payload, shape)
    good = codec.encode(np.ones((2, 2), bool))
    raw = good + payload + good
    offs = np.array([0, len(good), len(good) + len(payload)])
    lens = np.array([len(good), len(payload), len(good)])
    with pytest.raises(IIDCodecError):
        decode_flat(codec, raw, offs, lens, np.array([2, shape[0], 2]), np.array([2, shape[1], 2]))


def _zstd_bad_payloads() -> list:
    codec = get_codec("zstd")
    frame = codec.encode(np.ones((4, 4), bool))
    return [
        (frame, (5, 5)),  # declares the content of another shape
        (frame[:-2], (4, 4)),  # truncated
        (b"\x00" * 12, (4, 4)),  # no frame at all
        (frame + b"\x00", (4, 4)),  # bytes after the frame
        (b"", (1, 1)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_decode_flat_refuses_what_zstd_decode_refuses(case: int) -> None:
    assert_flat_refuses("zstd", *_zstd_bad_payloads()[case])


def test_decode_flat_packbits_length_checked() -> None:
    codec = get_codec("packbits")
    with pytest.raises(IIDCodecError):
        decode_flat(codec, b"\x00\x00\x00", np.array([0]), np.array([3]), np.array([3]), np.array([3]))


def test_eager_decoding_is_capped(monkeypatch: Any) -> None:
    """Past the amplification budget, segments are left to mask() (same masks)."""
    data = _workload_file(1)
    expected = read_all(data, 10**9, monkeypatch)
    monkeypatch.setattr(bulk, "EAGER_MIN_PIXELS", 2000)
    monkeypatch.setattr(bulk, "EAGER_PIXELS_PER_BYTE", 1)
    monkeypatch.setattr(bulk, "BULK_MIN", 1)
    f = iidschema.IIDFile(data)
    entries = f.fetch(everything=True)
    states = [e.seg._batch.state[e.seg._bi] for e in entries]
    assert bulk.SegmentBatch.LAZY in states and bulk.SegmentBatch.PENDING in states
    assert read_all(data, 1, monkeypatch) == expected


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    addresses=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\x02", b"")) | st.sampled_from([b"", b"obj-1", b"obj-12", b"obj-1" * 5]),
                       min_size=1, max_size=40),
    wanted=st.lists(st.binary(max_size=20) | st.sampled_from([b"", b"obj-1", b"obj-12", b"obj-1" * 5]), max_size=6),
    version=st.sampled_from([0, 1]),
)
def test_look_for_without_index_matches_brute_force(addresses: list, wanted: list, version: int, monkeypatch_module: Any) -> None:
    """Files without an address index narrow candidates with numpy
    (IIDBatch.find); the answer must be exactly the brute-force one."""
    monkeypatch_module.setattr(bulk, "BULK_MIN", 1)
    f = iidschema.IIDFile()
    for i, a in enumerate(addresses):
        f.add(a, b"d%d" % (i % 2), (0, 0, 1, 1), np.ones((1, 1), bool))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.iid"
        f.save(path, version=version)
        f.close()
        g = iidschema.IIDFile(path)
        g._reader.lookup = lambda addresses: None  # as a file without an address index
        got = [e.key for e in g.look_for(wanted)] if wanted else []
        g.close()
    assert got == [k for k, a in enumerate(addresses) if a in set(wanted)]


def test_overlap_graph_in_bulk(monkeypatch: Any) -> None:
    """overlap_graph reads bulk-decoded masks through views: same edges."""
    data = _workload_file(1, n=400)
    graphs = []
    for bulk_min in (10**9, 1):
        monkeypatch.setattr(bulk, "BULK_MIN", bulk_min)
        nodes, edges = iidschema.IIDFile(data).overlap_graph()
        graphs.append([(a.key, b.key, n) for a, b, n in edges])
    assert graphs[0] == graphs[1] and graphs[0]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 8), st.integers(0, 8)), max_size=50),
       st.integers(1, 64))
def test_overlapping_pairs_is_brute_force(boxes: list, chunk: int) -> None:
    from iidschema.iidfile import _overlapping_pairs

    b = np.array([(r, c, r + h, c + w) for r, c, h, w in boxes], dtype=np.int64).reshape(-1, 4)

    def hit(p: np.ndarray, q: np.ndarray) -> bool:
        return bool(p[2] > p[0] and p[3] > p[1] and q[2] > q[0] and q[3] > q[1]
                    and p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3])

    expected = [(i, j) for i in range(len(b)) for j in range(i + 1, len(b)) if hit(b[i], b[j])]
    assert list(_overlapping_pairs(b, chunk=chunk)) == expected


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_decoding_in_small_chunks(chunk: int, monkeypatch: Any) -> None:
    """Regions decoded a few at a time (many buffers) read the same."""
    monkeypatch.setattr(bulk, "DECODE_CHUNK", chunk)
    for version in (0, 1):
        assert assert_same(_workload_file(version), monkeypatch)[0] == "ok"


def test_chunks_are_released_once_handed_out(monkeypatch: Any) -> None:
    """Each chunk is decoded on its first mask() and dropped by the batch
    once all its masks are out; a second mask() decodes afresh, equal."""
    monkeypatch.setattr(bulk, "BULK_MIN", 1)
    monkeypatch.setattr(bulk, "DECODE_CHUNK", 200)
    f = iidschema.IIDFile(_workload_file(1))
    entries = f.fetch(everything=True)
    batch = entries[0].seg._batch
    assert not batch.bufs  # nothing decoded by fetch itself
    first = [e.seg.mask() for e in entries]
    assert batch.bufs and all(b is None for b in batch.bufs)
    again = [e.seg.mask() for e in entries]
    assert all(np.array_equal(a, b) and not np.shares_memory(a, b) for a, b in zip(first, again))


def test_masks_from_many_threads(monkeypatch: Any) -> None:
    """Threads asking for masks of one fetch at once (chunks decoded, handed
    out and released concurrently) get the same masks as one thread."""
    from concurrent.futures import ThreadPoolExecutor

    data = _workload_file(1, n=600)
    monkeypatch.setattr(bulk, "BULK_MIN", 1)
    monkeypatch.setattr(bulk, "DECODE_CHUNK", 256)
    expected = [e.seg.mask() for e in iidschema.IIDFile(data).fetch(everything=True)]
    for _ in range(3):
        entries = iidschema.IIDFile(data).fetch(everything=True)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda e: e.seg.mask(), entries))
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))
