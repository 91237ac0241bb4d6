"""Index sections of format version 1 (iidschema.index, docs/INDEXES.md).

* search / lookup agree with brute force on random data (hypothesis);
* the writers agree byte for byte with an independent pure-Python
  implementation written from docs/INDEXES.md;
* queries read a small part of the section (reads are counted);
* damaged sections raise IIDFormatError (or answer), nothing else, quickly.
"""

from __future__ import annotations

import math
import struct
import time

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iidschema.errors import IIDFormatError, IIDLimitError
from iidschema.index import AddressIndex, SpatialIndex, build_address_index, build_spatial_index
from iidschema.index import address as addr_mod
from iidschema.index import spatial as sp_mod
from iidschema.schema import dtype_of, format_of

U32 = 2**32 - 1
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class CountingRead:
    """``read(offset, length)`` over a buffer that counts calls and bytes."""

    def __init__(self, data: bytes, base: int = 0):
        self.buf = memoryview(b"\0" * base + bytes(data))
        self.calls = 0
        self.bytes = 0

    def __call__(self, offset: int, length: int):
        assert offset >= 0 and length >= 0
        self.calls += 1
        self.bytes += length
        return self.buf[offset : offset + length]


def open_spatial(data: bytes, base: int = 7, **kw) -> tuple[SpatialIndex, CountingRead]:
    read = CountingRead(data, base)
    return SpatialIndex(read, base, len(data), **kw), read


def open_address(data: bytes, base: int = 5, **kw) -> tuple[AddressIndex, CountingRead]:
    read = CountingRead(data, base)
    return AddressIndex(read, base, len(data), **kw), read


def brute_search(boxes, q) -> list[int]:
    qminr, qminc, qmaxr, qmaxc = q
    if qmaxr <= qminr or qmaxc <= qminc:
        return []
    return [i for i, (a, b, c, d) in enumerate(boxes)
            if c > a and d > b and a < qmaxr and qminr < c and b < qmaxc and qminc < d]


def brute_lookup(addresses, q) -> list[int]:
    h = xxhash.xxh3_64_intdigest(q)
    return [i for i, a in enumerate(addresses) if xxhash.xxh3_64_intdigest(a) == h]


# --------------------------------------------------------------------------
# Layout declarations
# --------------------------------------------------------------------------

def test_layout_sizes_and_derived_dtypes():
    assert sp_mod.SpatialHeader.sizeof() == 24
    assert sp_mod.SpatialNode.sizeof() == 20
    assert addr_mod.AddressHeader.sizeof() == 16
    assert addr_mod.AddressRecord.sizeof() == 12
    assert struct.calcsize(format_of(sp_mod.SpatialNode)) == 20
    assert struct.calcsize(format_of(addr_mod.AddressRecord)) == 12
    assert sp_mod.NODE_DTYPE == dtype_of(sp_mod.SpatialNode)
    assert addr_mod.RECORD_DTYPE == dtype_of(addr_mod.AddressRecord)
    assert addr_mod.BUCKET_DTYPE == dtype_of(addr_mod.AddressBucket)


def test_level_sizes():
    assert sp_mod.level_sizes(0, 16) == []
    assert sp_mod.level_sizes(1, 16) == [1]
    assert sp_mod.level_sizes(16, 16) == [16, 1]
    assert sp_mod.level_sizes(17, 16) == [17, 2, 1]
    assert sp_mod.level_sizes(1_000_000, 16) == [1000000, 62500, 3907, 245, 16, 1]
    assert len(sp_mod.level_sizes(U32, 2)) == 33


# --------------------------------------------------------------------------
# Hilbert curve
# --------------------------------------------------------------------------

def test_hilbert_fast_equals_reference():
    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.integers(0, 1 << 16, 3000), [0, 0, 65535, 65535, 1, 32768]])
    ys = np.concatenate([rng.integers(0, 1 << 16, 3000), [0, 65535, 0, 65535, 1, 32767]])
    fast = sp_mod.hilbert_values(xs, ys)
    assert fast.dtype == np.uint32
    assert [int(v) for v in fast] == [sp_mod.hilbert_xy2d(int(x), int(y)) for x, y in zip(xs, ys)]
    # a dense corner block too
    gx, gy = np.meshgrid(np.arange(64), np.arange(64))
    fast = sp_mod.hilbert_values(gx.ravel(), gy.ravel())
    assert [int(v) for v in fast] == [sp_mod.hilbert_xy2d(int(x), int(y)) for x, y in zip(gx.ravel(), gy.ravel())]


def test_hilbert_is_a_curve():
    # order 2 on its own grid: consecutive cells are neighbours
    cells = sorted(((sp_mod.hilbert_xy2d(x, y, 2), x, y) for x in range(4) for y in range(4)))
    assert [d for d, _, _ in cells] == list(range(16))
    for (_, x0, y0), (_, x1, y1) in zip(cells, cells[1:]):
        assert abs(x0 - x1) + abs(y0 - y1) == 1
    assert [sp_mod.hilbert_xy2d(x, y, 1) for x, y in [(0, 0), (0, 1), (1, 1), (1, 0)]] == [0, 1, 2, 3]


# --------------------------------------------------------------------------
# Independent implementation from docs/INDEXES.md (pure Python)
# --------------------------------------------------------------------------

def doc_hilbert(x: int, y: int) -> int:
    n = 1 << 16
    d, s = 0, n // 2
    while s > 0:
        rx, ry = int(x & s != 0), int(y & s != 0)
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x, y = n - 1 - x, n - 1 - y
            x, y = y, x
        s //= 2
    return d


def doc_spatial(boxes: list[tuple[int, int, int, int]], b: int) -> bytes:
    n = len(boxes)
    sizes = []
    if n:
        sizes = [n]
        while sizes[-1] > 1:
            sizes.append(-(-sizes[-1] // b))
    head = b"SIDX" + struct.pack("<III", b, n, len(sizes)) + struct.pack("<Q", sum(sizes))
    if not n:
        return head

    def empty(bx):
        return bx[2] == bx[0] or bx[3] == bx[1]

    ne = [i for i in range(n) if not empty(boxes[i])]
    value = {i: 2**32 for i in range(n)}
    if ne:
        cx = {i: boxes[i][1] + boxes[i][3] for i in ne}
        cy = {i: boxes[i][0] + boxes[i][2] for i in ne}

        def scale(c, i):
            lo, hi = min(c.values()), max(c.values())
            return 0 if hi == lo else (c[i] - lo) * 65535 // (hi - lo)

        for i in ne:
            value[i] = doc_hilbert(scale(cx, i), scale(cy, i))
    order = sorted(range(n), key=lambda i: (value[i], i))
    levels = [[(*boxes[k], k) for k in order]]
    for l in range(1, len(sizes)):
        below = levels[-1]
        level = []
        for j in range(sizes[l]):
            kids = [c for c in below[j * b : j * b + b] if not empty(c)]
            if kids:
                box = (min(c[0] for c in kids), min(c[1] for c in kids),
                       max(c[2] for c in kids), max(c[3] for c in kids))
            else:
                box = (0, 0, 0, 0)
            level.append((*box, j * b))
        levels.append(level)
    body = b"".join(struct.pack("<IIIII", *node) for level in reversed(levels) for node in level)
    return head + body


def doc_address(addresses: list[bytes]) -> bytes:
    n = len(addresses)
    k = 0
    while n > 8 * 2**k:
        k += 1
    recs = sorted((xxhash.xxh3_64_intdigest(a), i) for i, a in enumerate(addresses))
    bucket = [(h >> (64 - k)) if k else 0 for h, _ in recs]
    table = [sum(1 for x in bucket if x < i) for i in range(2**k + 1)]
    return (b"AIDX" + struct.pack("<III", 1, k, n) + struct.pack(f"<{len(table)}I", *table)
            + b"".join(struct.pack("<QI", h, i) for h, i in recs))


def test_worked_examples_from_docs():
    data = build_spatial_index(np.array([[0, 0, 10, 10], [5, 5, 6, 6], [20, 0, 30, 4]]), node_size=2)
    assert data.hex() == (
        "53494458" "02000000" "03000000" "03000000" "0600000000000000"
        "00000000" "00000000" "1e000000" "0a000000" "00000000"
        "00000000" "00000000" "1e000000" "0a000000" "00000000"
        "05000000" "05000000" "06000000" "06000000" "02000000"
        "14000000" "00000000" "1e000000" "04000000" "02000000"
        "00000000" "00000000" "0a000000" "0a000000" "00000000"
        "05000000" "05000000" "06000000" "06000000" "01000000"
    )
    assert build_address_index([b"a", b"", b"a"]).hex() == (
        "41494458010000000000000003000000" "0000000003000000"
        "c294d3380580062d01000000" "1f4e961eb632c6e600000000" "1f4e961eb632c6e602000000"
    )
    assert xxhash.xxh3_64_intdigest(b"") == 0x2D06800538D394C2


coord = st.one_of(st.integers(0, 40), st.integers(U32 - 40, U32), st.integers(0, U32))


@st.composite
def bbox_sets(draw, max_n=70):
    n = draw(st.integers(0, max_n))
    rows: list[tuple[int, int, int, int]] = []
    for _ in range(n):
        choice = draw(st.integers(0, 9))
        if rows and choice == 0:  # duplicate
            rows.append(draw(st.sampled_from(rows)))
            continue
        a, c = sorted((draw(coord), draw(coord)))
        b, d = sorted((draw(coord), draw(coord)))
        if choice == 1:  # empty: zero height or width
            if draw(st.booleans()):
                c = a
            else:
                d = b
        rows.append((a, b, c, d))
    return rows


node_sizes = st.sampled_from([2, 3, 4, 5, 16])


@FAST
@given(bbox_sets(max_n=40), node_sizes)
def test_spatial_bytes_match_docs(boxes, b):
    assert build_spatial_index(np.array(boxes, dtype=np.int64).reshape(-1, 4), node_size=b) == doc_spatial(boxes, b)


@FAST
@given(st.lists(st.binary(max_size=12), max_size=60))
def test_address_bytes_match_docs(addresses):
    assert build_address_index(addresses) == doc_address(addresses)


# --------------------------------------------------------------------------
# Spatial search vs brute force
# --------------------------------------------------------------------------

query = st.tuples(
    st.one_of(coord, st.integers(-5, 5)), st.one_of(coord, st.integers(-5, 5)),
    st.one_of(coord, st.integers(U32 - 2, U32 + 3), st.just(2**70)),
    st.one_of(coord, st.integers(U32 - 2, U32 + 3)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bbox_sets(), node_sizes, st.lists(query, min_size=1, max_size=8), st.data())
def test_search_matches_brute_force(boxes, b, queries, data):
    arr = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    idx, _ = open_spatial(build_spatial_index(arr, node_size=b), cache_bytes=data.draw(st.sampled_from([0, 100, 4096])),
                          max_gap=data.draw(st.sampled_from([0, 40, 1024])))
    assert len(idx) == len(boxes)
    for q in queries:
        got = idx.search(q)
        assert got.dtype == np.int64
        assert got.tolist() == brute_search(boxes, q)
    # points, including ones on box corners and at the coordinate limit
    points = [(U32 - 1, U32 - 1), (U32, U32), (0, 0)]
    if boxes:
        bx = data.draw(st.sampled_from(boxes))
        points += [(bx[0], bx[1]), (bx[2] - 1, bx[3] - 1), (bx[2], bx[3])]
    for r, c in points:
        assert idx.search_point(r, c).tolist() == brute_search(boxes, (r, c, r + 1, c + 1))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 15, 16, 17, 255, 256, 257, 4097])
@pytest.mark.parametrize("b", [2, 4, 16])
def test_search_node_size_boundaries(n, b):
    rng = np.random.default_rng(n * 31 + b)
    lo = rng.integers(0, 1000, (n, 2))
    arr = np.concatenate([lo, lo + rng.integers(0, 40, (n, 2))], axis=1)
    idx, _ = open_spatial(build_spatial_index(arr, node_size=b))
    assert idx.num_levels == len(sp_mod.level_sizes(n, b))
    boxes = [tuple(map(int, r)) for r in arr]
    for q in [(0, 0, 1100, 1100), (500, 500, 501, 501), (100, 200, 300, 900), (2000, 0, 3000, 10)]:
        assert idx.search(q).tolist() == brute_search(boxes, q)
    for r, c in rng.integers(0, 1040, (30, 2)):
        assert idx.search_point(r, c).tolist() == brute_search(boxes, (r, c, r + 1, c + 1))


def test_search_large_random_and_dtypes():
    rng = np.random.default_rng(11)
    n = 20_000
    lo = rng.integers(0, 100_000, (n, 2))
    arr = np.concatenate([lo, lo + rng.integers(0, 300, (n, 2))], axis=1)
    for dt in (np.int64, np.uint32, np.uint64):
        assert build_spatial_index(arr.astype(dt)) == build_spatial_index(arr)
    assert build_spatial_index(arr.tolist()) == build_spatial_index(arr)
    idx, _ = open_spatial(build_spatial_index(arr))
    for q in rng.integers(0, 100_000, (40, 2)):
        size = rng.integers(1, 5000, 2)
        bbox = (q[0], q[1], q[0] + size[0], q[1] + size[1])
        hit = ((arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1]) & (arr[:, 0] < bbox[2]) & (bbox[0] < arr[:, 2])
               & (arr[:, 1] < bbox[3]) & (bbox[1] < arr[:, 3]))
        assert idx.search(bbox).tolist() == np.flatnonzero(hit).tolist()


def test_empty_queries_and_empty_index():
    idx, read = open_spatial(build_spatial_index(np.zeros((0, 4), dtype=np.int64)))
    assert len(idx) == 0 and idx.num_levels == 0
    assert idx.search((0, 0, 10, 10)).tolist() == []
    assert build_spatial_index([]) == build_spatial_index(np.zeros((0, 4)))
    idx, read = open_spatial(build_spatial_index(np.array([[0, 0, 5, 5]])))
    calls = read.calls
    assert idx.search((3, 3, 3, 9)).tolist() == []  # empty query: no read
    assert idx.search((9, 9, 1, 1)).tolist() == []
    assert read.calls == calls
    assert idx.search_point(4, 4).tolist() == [0]


def test_build_rejects_bad_input():
    with pytest.raises(ValueError):
        build_spatial_index(np.array([[0, 0, 1]]))
    with pytest.raises(ValueError):
        build_spatial_index(np.array([[0.0, 0, 1, 1]]))
    with pytest.raises(ValueError):
        build_spatial_index(np.array([[5, 0, 4, 1]]))  # inverted
    with pytest.raises(IIDLimitError):
        build_spatial_index(np.array([[0, 0, 2**32, 1]]))
    with pytest.raises(IIDLimitError):
        build_spatial_index(np.array([[-1, 0, 2, 1]]))
    with pytest.raises(IIDLimitError):
        build_spatial_index(np.array([[0, 0, 2**63, 1]], dtype=np.uint64))
    for b in (0, 1, 65536):
        with pytest.raises(ValueError):
            build_spatial_index(np.array([[0, 0, 1, 1]]), node_size=b)


# --------------------------------------------------------------------------
# Read counting
# --------------------------------------------------------------------------

def test_spatial_reads_only_a_few_nodes():
    rng = np.random.default_rng(5)
    n = 100_000
    lo = rng.integers(0, 100_000 - 200, (n, 2))
    arr = np.concatenate([lo, lo + rng.integers(1, 200, (n, 2))], axis=1)
    data = build_spatial_index(arr)
    idx, read = open_spatial(data)
    assert (read.calls, read.bytes) == (1, 24)  # the header only
    idx.search_point(50_000, 50_000)
    points = rng.integers(0, 100_000, (200, 2))
    calls, nbytes = read.calls, read.bytes
    for r, c in points:
        got = idx.search_point(r, c)
        assert got.tolist() == np.flatnonzero(
            (arr[:, 0] <= r) & (r < arr[:, 2]) & (arr[:, 1] <= c) & (c < arr[:, 3])).tolist()
    per_calls = (read.calls - calls) / len(points)
    per_bytes = (read.bytes - nbytes) / len(points)
    assert per_calls <= idx.num_levels + 2
    assert per_bytes < 0.001 * len(data)  # < 2.1 KB of a 2.1 MB section
    # a region query reads more, but still a fraction
    calls, nbytes = read.calls, read.bytes
    assert len(idx.search((10_000, 10_000, 12_000, 12_000))) > 0
    assert read.bytes - nbytes < 0.05 * len(data)


def test_address_reads_two_small_ranges():
    addresses = [b"iid-%d" % i for i in range(50_000)]
    data = build_address_index(addresses)
    idx, read = open_address(data)
    assert (read.calls, read.bytes) == (1, 16)
    for i in range(0, 50_000, 997):
        calls, nbytes = read.calls, read.bytes
        assert idx.lookup(addresses[i]).tolist() == [i]
        assert read.calls - calls == 2
        assert read.bytes - nbytes <= 8 + 12 * 40
    calls = read.calls
    results = idx.lookup_many(addresses[:2000])
    assert [r.tolist() for r in results] == [[i] for i in range(2000)]
    assert read.calls - calls < 2 * 2000


# --------------------------------------------------------------------------
# Address lookup vs brute force
# --------------------------------------------------------------------------

address = st.one_of(st.just(b""), st.binary(max_size=4), st.binary(min_size=100, max_size=3000))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(address, max_size=80), st.lists(address, max_size=6), st.data())
def test_lookup_matches_brute_force(addresses, others, data):
    if addresses and data.draw(st.booleans()):  # duplicates
        addresses = addresses + [data.draw(st.sampled_from(addresses)) for _ in range(data.draw(st.integers(1, 20)))]
    idx, _ = open_address(build_address_index(addresses), max_gap=data.draw(st.sampled_from([0, 24, 1024])))
    queries = others + addresses[:10]
    many = idx.lookup_many(queries)
    for q, got in zip(queries, many):
        exp = brute_lookup(addresses, q)
        assert got.dtype == np.int64
        assert got.tolist() == exp
        assert idx.lookup(q).tolist() == exp
    for i, a in enumerate(addresses):
        assert i in idx.lookup(a)
    assert idx.lookup_many([]) == []


def _same_bucket(addresses: list[bytes], target: bytes, count: int) -> list[bytes]:
    k = addr_mod.bucket_bits_for(len(addresses))
    want = xxhash.xxh3_64_intdigest(target) >> (64 - k)
    out, i = [], 0
    while len(out) < count:
        cand = b"probe-%d" % i
        if xxhash.xxh3_64_intdigest(cand) >> (64 - k) == want and cand not in addresses:
            out.append(cand)
        i += 1
    return out


def test_lookup_in_large_bucket_uses_bounded_binary_search():
    # 2000 copies of one address make a bucket far above SCAN_LIMIT
    addresses = [b"same"] * 2000 + [b"x-%d" % i for i in range(300)]
    neighbours = _same_bucket(addresses, b"same", 6)
    addresses += neighbours[:3]  # present in the big bucket; the other 3 absent
    idx, read = open_address(build_address_index(addresses))
    for q in [b"same", *neighbours, b"x-5"]:
        calls = read.calls
        assert idx.lookup(q).tolist() == brute_lookup(addresses, q)
        assert read.calls - calls <= 3 + 2 * (math.ceil(math.log2(len(addresses))) + 1)
    assert [r.tolist() for r in idx.lookup_many([b"same", *neighbours])] == \
        [brute_lookup(addresses, q) for q in [b"same", *neighbours]]


# --------------------------------------------------------------------------
# Malformed sections
# --------------------------------------------------------------------------

def _spatial_sample() -> tuple[bytes, list]:
    rng = np.random.default_rng(2)
    lo = rng.integers(0, 500, (300, 2))
    arr = np.concatenate([lo, lo + rng.integers(0, 30, (300, 2))], axis=1)
    return build_spatial_index(arr, node_size=4), [tuple(map(int, r)) for r in arr]


SPATIAL_SAMPLE, SPATIAL_BOXES = _spatial_sample()
ADDRESSES = [b"a-%d" % i for i in range(200)] + [b"dup"] * 600
ADDRESS_SAMPLE = build_address_index(ADDRESSES)


def _mutate(data: bytes, draw) -> bytes:
    buf = bytearray(data)
    kind = draw(st.integers(0, 3))
    if kind == 0:  # random byte flips
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= draw(st.integers(1, 255))
    elif kind == 1:  # truncation (the container's length stays honest)
        buf = buf[: draw(st.integers(0, len(buf) - 1))]
    elif kind == 2:  # a huge or random u32 in the header
        pos = draw(st.sampled_from([4, 8, 12, 16, 20]))
        buf[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 2, U32, 2**31, draw(st.integers(0, U32))])))
    else:  # a random u32 anywhere (refs, coordinates, table entries, keys)
        pos = draw(st.integers(0, max(0, len(buf) - 4)))
        buf[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from([0, U32, draw(st.integers(0, U32))])))
    return bytes(buf)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_spatial_index_raises_only_format_errors(data):
    damaged = _mutate(SPATIAL_SAMPLE, data.draw)
    start = time.perf_counter()
    try:
        idx, read = open_spatial(damaged, cache_bytes=data.draw(st.sampled_from([0, 4096])))
        for q in [(0, 0, 600, 600), (100, 100, 140, 160), (0, 0, U32, U32)]:
            got = idx.search(q)
            assert got.dtype == np.int64 and (got.size == 0 or (got.min() >= 0 and got.max() < len(idx)))
        for r, c in [(10, 10), (250, 250)]:
            idx.search_point(r, c)
    except IIDFormatError as exc:
        assert exc.section == "spatial_index" and exc.offset is not None and exc.offset >= 7
    assert time.perf_counter() - start < 1.0


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_address_index_raises_only_format_errors(data):
    damaged = _mutate(ADDRESS_SAMPLE, data.draw)
    start = time.perf_counter()
    try:
        idx, read = open_address(damaged)
        for q in [b"a-1", b"a-150", b"dup", b"absent"]:
            got = idx.lookup(q)
            assert got.dtype == np.int64 and (got.size == 0 or (got.min() >= 0 and got.max() < len(idx)))
        idx.lookup_many([b"a-%d" % i for i in range(0, 200, 7)] + [b"dup"])
    except IIDFormatError as exc:
        assert exc.section == "address_index" and exc.offset is not None and exc.offset >= 5
    assert time.perf_counter() - start < 1.0


def _spatial_nodes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=sp_mod.NODE_DTYPE, offset=24).copy()


def _with_nodes(data: bytes, nodes: np.ndarray) -> bytes:
    return data[:24] + nodes.tobytes()


def test_spatial_header_checks():
    good = SPATIAL_SAMPLE
    cases = {
        "magic": b"XXXX" + good[4:],
        "node size 1": good[:4] + struct.pack("<I", 1) + good[8:],
        "node size huge": good[:4] + struct.pack("<I", U32) + good[8:],
        "entries huge": good[:8] + struct.pack("<I", U32) + good[12:],
        "levels": good[:12] + struct.pack("<I", 99) + good[16:],
        "nodes": good[:16] + struct.pack("<Q", 2**63) + good[24:],
        "long": good + b"\0" * 20,
        "short": good[:-20],
        "tiny": good[:10],
    }
    for name, data in cases.items():
        with pytest.raises(IIDFormatError) as info:
            open_spatial(data, base=100)
        assert info.value.section == "spatial_index", name
        assert 100 <= info.value.offset < 100 + 24, name


def test_spatial_node_checks():
    good = SPATIAL_SAMPLE
    sizes = sp_mod.level_sizes(300, 4)
    leaf0 = sum(sizes[1:])
    everything = (0, 0, 600, 600)

    nodes = _spatial_nodes(good)
    nodes["ref"][1] += 4  # an internal node's first child
    with pytest.raises(IIDFormatError, match="refers to child"):
        open_spatial(_with_nodes(good, nodes))[0].search(everything)

    nodes = _spatial_nodes(good)
    nodes["ref"][leaf0 + 5] = 300  # a key past N
    with pytest.raises(IIDFormatError, match="key"):
        open_spatial(_with_nodes(good, nodes))[0].search(everything)

    nodes = _spatial_nodes(good)
    nodes["maxr"][leaf0 + 5] = nodes["minr"][leaf0 + 5] - 1  # inverted
    with pytest.raises(IIDFormatError, match="inverted"):
        open_spatial(_with_nodes(good, nodes))[0].search(everything)

    nodes = _spatial_nodes(good)
    nodes["maxc"][leaf0 + 5] = 10_000  # sticks out of its parent
    with pytest.raises(IIDFormatError, match="outside its parent") as info:
        open_spatial(_with_nodes(good, nodes))[0].search(everything)
    assert info.value.offset == 7 + 24 + 20 * (leaf0 + 5)


def test_short_reads_are_format_errors():
    def short(offset, length):
        return SPATIAL_SAMPLE[offset : offset + length][:-1]

    with pytest.raises(IIDFormatError, match="short read"):
        SpatialIndex(short, 0, len(SPATIAL_SAMPLE))
    calls = []

    def late_short(offset, length):
        calls.append(offset)
        data = SPATIAL_SAMPLE[offset : offset + length]
        return data if len(calls) == 1 else data[:-1]

    idx = SpatialIndex(late_short, 0, len(SPATIAL_SAMPLE))
    with pytest.raises(IIDFormatError, match="short read"):
        idx.search((0, 0, 10, 10))


def test_address_header_checks():
    good = ADDRESS_SAMPLE
    cases = {
        "magic": b"SIDX" + good[4:],
        "hash id": good[:4] + struct.pack("<I", 2) + good[8:],
        "bits": good[:8] + struct.pack("<I", 33) + good[12:],
        "bits vs length": good[:8] + struct.pack("<I", 3) + good[12:],
        "entries": good[:12] + struct.pack("<I", U32) + good[16:],
        "long": good + b"\0",
        "tiny": good[:15],
    }
    for name, data in cases.items():
        with pytest.raises(IIDFormatError) as info:
            open_address(data, base=50)
        assert info.value.section == "address_index", name
        assert 50 <= info.value.offset < 50 + 16, name


def test_address_order_and_table_checks():
    addresses = [b"k-%d" % i for i in range(100)]
    good = build_address_index(addresses)
    k = addr_mod.bucket_bits_for(100)
    rec_at = 16 + 4 * (2**k + 1)
    recs = np.frombuffer(good, dtype=addr_mod.RECORD_DTYPE, offset=rec_at).copy()
    table = np.frombuffer(good, dtype=addr_mod.BUCKET_DTYPE, offset=16, count=2**k + 1).copy()
    # swap two records of a bucket that has at least two
    b = int(np.argmax(np.diff(table["start"].astype(np.int64)) >= 2))
    s = int(table["start"][b])
    bad = recs.copy()
    bad[[s, s + 1]] = bad[[s + 1, s]]
    idx, _ = open_address(good[:rec_at] + bad.tobytes())
    victim = addresses[int(recs["key"][s])]
    with pytest.raises(IIDFormatError, match="order"):
        idx.lookup(victim)
    with pytest.raises(IIDFormatError, match="order"):
        idx.lookup_many([victim])
    # a table entry past N, and a decreasing one
    for value in (101, 0):
        t = table.copy()
        t["start"][b + 1] = value
        idx, _ = open_address(good[:16] + t.tobytes() + good[rec_at:])
        if value == 0 and int(table["start"][b]) == 0:
            continue
        with pytest.raises(IIDFormatError, match="bucket"):
            idx.lookup(victim)
        with pytest.raises(IIDFormatError, match="bucket"):
            idx.lookup_many([victim, b"other"])
    # a record in the wrong bucket
    bad = recs.copy()
    bad["hash"][s] ^= np.uint64(1 << 63)
    idx, _ = open_address(good[:rec_at] + bad.tobytes())
    with pytest.raises(IIDFormatError, match="outside bucket"):
        idx.lookup(addresses[int(recs["key"][s + 1])])


def test_binary_search_terminates_on_shuffled_bucket():
    good = ADDRESS_SAMPLE
    k = addr_mod.bucket_bits_for(len(ADDRESSES))
    rec_at = 16 + 4 * (2**k + 1)
    recs = np.frombuffer(good, dtype=addr_mod.RECORD_DTYPE, offset=rec_at).copy()
    rng = np.random.default_rng(0)
    big = np.flatnonzero(recs["hash"] == xxhash.xxh3_64_intdigest(b"dup"))
    neighbours = _same_bucket(ADDRESSES, b"dup", 3)
    for seed in range(20):
        shuffled = recs.copy()
        lo, hi = int(big.min()) - 2, int(big.max()) + 3
        lo, hi = max(lo, 0), min(hi, len(recs))
        part = shuffled[lo:hi].copy()
        rng.shuffle(part)
        shuffled[lo:hi] = part
        idx, read = open_address(good[:rec_at] + shuffled.tobytes())
        for q in [b"dup", *neighbours]:
            calls = read.calls
            try:
                got = idx.lookup(q)
                assert got.size == 0 or got.max() < len(ADDRESSES)
            except IIDFormatError as exc:
                assert exc.section == "address_index"
            assert read.calls - calls <= 3 + 2 * (math.ceil(math.log2(len(ADDRESSES))) + 1)
