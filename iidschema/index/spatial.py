"""Spatial index section (format version 1): a packed Hilbert R-tree.

The tree is static and stored FlatGeobuf-style as one flat array of
fixed-size node records, every level contiguous, **root level first**.  The
byte layout and the construction algorithm (normative) are in
``docs/INDEXES.md``; in short:

* leaves (one per entry, ``ref`` = entry key) are sorted by the Hilbert value
  of their bbox centre, empty boxes last;
* each parent covers ``node_size`` consecutive children of the level below
  (``ref`` = index of its first child *within that level*) and its bbox is
  the union of its non-empty children (``0,0,0,0`` if all are empty);
* levels are repeated until a level has one node (the root).

:func:`build_spatial_index` writes the section, :class:`SpatialIndex` queries
it through a ``read(offset, length)`` function, reading the few runs of
sibling nodes a query needs, level by level, and checking every record it
reads (child references, coordinates, containment in the parent), so a
damaged section raises :class:`~iidschema.errors.IIDFormatError` instead of
looping, indexing out of range or leaking a numpy error.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from construct import ConstructError

from ..errors import IIDFormatError, IIDLimitError

__all__ = [
    "SPATIAL_MAGIC",
    "SpatialHeader",
    "SpatialNode",
    "SpatialIndex",
    "build_spatial_index",
    "level_sizes",
    "hilbert_xy2d",
    "hilbert_values",
]

# The byte layout of this section is declared in iidschema/schema.py.
from ..schema import dtype_of, SPATIAL_MAGIC, SpatialHeader, SpatialNode  # noqa: E402


SECTION = "spatial_index"
HEADER_SIZE = SpatialHeader.sizeof()  # 24
NODE_DTYPE = dtype_of(SpatialNode)
NODE_SIZE_BYTES = NODE_DTYPE.itemsize  # 20
MIN_NODE_SIZE = 2
MAX_NODE_SIZE = 0xFFFF
MAX_COORD = 0xFFFFFFFF
MAX_ENTRIES = 0xFFFFFFFF
HILBERT_MAX = 0xFFFF  # the Hilbert grid is 2^16 x 2^16

ReadFn = Callable[[int, int], "bytes | bytearray | memoryview"]


# --------------------------------------------------------------------------
# Shared helpers (also used by the address index)
# --------------------------------------------------------------------------

def level_sizes(num_entries: int, node_size: int) -> list[int]:
    """Node counts per level, leaf level first: ``[N, ceil(N/b), ..., 1]``.

    ``[]`` for ``N = 0``; ``[1]`` for ``N = 1`` (the single leaf is the root).
    Needs ``node_size >= 2``, so it has at most 33 levels for 32-bit counts.
    """
    if num_entries <= 0:
        return []
    sizes = [num_entries]
    while sizes[-1] > 1:
        sizes.append(-(-sizes[-1] // node_size))
    return sizes


def _read_exact(read: ReadFn, offset: int, length: int, section: str) -> bytes | memoryview:
    data = read(offset, length)
    got = memoryview(data).nbytes
    if got != length:
        raise IIDFormatError(f"short read: wanted {length} bytes, got {got}", section=section, offset=offset)
    return data


def _coalesce(starts: np.ndarray, ends: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Merge sorted half-open ranges whose gaps are at most ``max_gap``."""
    runs: list[tuple[int, int]] = []
    if len(starts) == 0:
        return runs
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    ends = np.maximum.accumulate(ends[order])
    # a new run starts where the gap to everything before exceeds max_gap
    breaks = np.flatnonzero(starts[1:] - ends[:-1] > max_gap) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks - 1, [len(starts) - 1]))
    return [(int(a), int(b)) for a, b in zip(starts[first], ends[last])]


# --------------------------------------------------------------------------
# Hilbert curve
# --------------------------------------------------------------------------

def hilbert_xy2d(x: int, y: int, order: int = 16) -> int:
    """Reference (scalar) Hilbert index of cell ``(x, y)`` on a ``2^order``
    grid; the normative definition in docs/INDEXES.md.  ``x`` is the column,
    ``y`` the row."""
    n = 1 << order
    d = 0
    s = n >> 1
    while s > 0:
        rx = 1 if x & s else 0
        ry = 1 if y & s else 0
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x = n - 1 - x
                y = n - 1 - y
            x, y = y, x
        s >>= 1
    return d


def _interleave(v: np.ndarray) -> np.ndarray:
    v = (v | (v << np.uint32(8))) & np.uint32(0x00FF00FF)
    v = (v | (v << np.uint32(4))) & np.uint32(0x0F0F0F0F)
    v = (v | (v << np.uint32(2))) & np.uint32(0x33333333)
    v = (v | (v << np.uint32(1))) & np.uint32(0x55555555)
    return v


def hilbert_values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vectorised :func:`hilbert_xy2d` for ``order = 16`` (uint32 result).

    Branch-free bit-parallel formulation (the public-domain "fast Hilbert
    curve" construction also used by FlatGeobuf); equal to the reference
    loop for every ``0 <= x, y < 2^16`` (tested).
    """
    x = np.asarray(x, dtype=np.uint32)
    y = np.asarray(y, dtype=np.uint32)
    m = np.uint32(0xFFFF)
    one, two, four, eight = (np.uint32(k) for k in (1, 2, 4, 8))
    a = x ^ y
    b = m ^ a
    c = m ^ (x | y)
    d = x & (y ^ m)
    A = a | (b >> one)
    B = (a >> one) ^ a
    C = ((c >> one) ^ (b & (d >> one))) ^ c
    D = ((a & (c >> one)) ^ (d >> one)) ^ d
    for s in (two, four):
        a, b, c, d = A, B, C, D
        A = (a & (a >> s)) ^ (b & (b >> s))
        B = (a & (b >> s)) ^ (b & ((a ^ b) >> s))
        C = C ^ ((a & (c >> s)) ^ (b & (d >> s)))
        D = D ^ ((b & (c >> s)) ^ ((a ^ b) & (d >> s)))
    a, b, c, d = A, B, C, D
    C = C ^ ((a & (c >> eight)) ^ (b & (d >> eight)))
    D = D ^ ((b & (c >> eight)) ^ ((a ^ b) & (d >> eight)))
    a = C ^ (C >> one)
    b = D ^ (D >> one)
    i0 = x ^ y
    i1 = b | (m ^ (i0 | a))
    return (_interleave(i1) << one) | _interleave(i0)


def _grid(doubled_centre: np.ndarray) -> np.ndarray:
    """Scale doubled centres (``min + max``) onto ``0 .. 65535``, exactly."""
    lo = doubled_centre.min()
    span = int(doubled_centre.max() - lo)
    if span == 0:
        return np.zeros(doubled_centre.shape, dtype=np.uint32)
    # (c - lo) < 2^33 and * 65535 < 2^49: exact in int64
    return ((doubled_centre - lo) * HILBERT_MAX // span).astype(np.uint32)


def leaf_order(bboxes: np.ndarray) -> np.ndarray:
    """Entry keys in leaf order: non-empty boxes by (Hilbert value of the
    centre, key), then empty boxes by key."""
    b = np.asarray(bboxes, dtype=np.int64)
    n = len(b)
    nonempty = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    sort_key = np.full(n, 1 << 32, dtype=np.int64)  # empty boxes after every Hilbert value
    if nonempty.any():
        ne = b[nonempty]
        x = _grid(ne[:, 1] + ne[:, 3])  # columns
        y = _grid(ne[:, 0] + ne[:, 2])  # rows
        sort_key[nonempty] = hilbert_values(x, y).astype(np.int64)
    return np.argsort(sort_key, kind="stable")  # stable: ties by key


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------

def _check_bboxes(bboxes: np.ndarray | Sequence) -> np.ndarray:
    arr = np.asarray(bboxes)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"bboxes must have shape (N, 4), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"bboxes must be integers, got dtype {arr.dtype}")
    if len(arr) > MAX_ENTRIES:
        raise IIDLimitError(f"the spatial index holds at most {MAX_ENTRIES} entries, got {len(arr)}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        if arr.size and int(arr.max()) > MAX_COORD:
            raise IIDLimitError(f"bbox coordinate {int(arr.max())} does not fit 32 bits")
        arr = arr.astype(np.int64)
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > MAX_COORD:
        raise IIDLimitError(f"bbox coordinates must lie in 0..{MAX_COORD}, got {lo}..{hi}")
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"bbox {i} is inverted: {tuple(int(v) for v in arr[i])}")
    return arr


def build_spatial_index(bboxes: np.ndarray, node_size: int = 16) -> bytes:
    """The spatial index section for entry ``i`` having ``bboxes[i]``.

    :param bboxes: ``(N, 4)`` integers ``(minr, minc, maxr, maxc)``, max
        exclusive, ``0 <= min <= max <= 2^32 - 1``.  Boxes with zero height
        or width are stored but never match a query.
    :param node_size: children per internal node, ``2 .. 65535``.
    :raises ValueError: on a bad shape, dtype, inverted box or node size.
    :raises IIDLimitError: on coordinates or counts beyond 32 bits.
    """
    node_size = int(node_size)
    if not MIN_NODE_SIZE <= node_size <= MAX_NODE_SIZE:
        raise ValueError(f"node_size must be in {MIN_NODE_SIZE}..{MAX_NODE_SIZE}, got {node_size}")
    boxes = _check_bboxes(bboxes)
    n = len(boxes)
    sizes = level_sizes(n, node_size)
    total = sum(sizes)
    header = SpatialHeader.build(
        {"node_size": node_size, "num_entries": n, "num_levels": len(sizes), "num_nodes": total}
    )
    if n == 0:
        return header

    nodes = np.zeros(total, dtype=NODE_DTYPE)
    order = leaf_order(boxes)
    level = boxes[order].astype(np.uint32)  # (n, 4)
    # stored root first: level l starts after all the levels above it
    starts = [sum(sizes[l + 1 :]) for l in range(len(sizes))]

    def store(l: int, box: np.ndarray, ref: np.ndarray) -> None:
        out = nodes[starts[l] : starts[l] + sizes[l]]
        for i, name in enumerate(("minr", "minc", "maxr", "maxc")):
            out[name] = box[:, i]
        out["ref"] = ref

    store(0, level, order.astype(np.uint32))
    big = np.uint32(MAX_COORD)
    for l in range(1, len(sizes)):
        count = len(level)
        groups = sizes[l]
        nonempty = (level[:, 2] > level[:, 0]) & (level[:, 3] > level[:, 1])
        pad = groups * node_size - count
        lo = np.where(nonempty[:, None], level[:, :2], big)
        hi = np.where(nonempty[:, None], level[:, 2:], np.uint32(0))
        lo = np.concatenate([lo, np.full((pad, 2), big, dtype=np.uint32)]).reshape(groups, node_size, 2).min(axis=1)
        hi = np.concatenate([hi, np.zeros((pad, 2), dtype=np.uint32)]).reshape(groups, node_size, 2).max(axis=1)
        anyne = np.concatenate([nonempty, np.zeros(pad, dtype=bool)]).reshape(groups, node_size).any(axis=1)
        parent = np.concatenate([lo, hi], axis=1)
        parent[~anyne] = 0  # all children empty: the parent is (0, 0, 0, 0)
        # first child within the level below; < count <= 2^32 - 1, fits u32
        store(l, parent, (np.arange(groups, dtype=np.int64) * node_size).astype(np.uint32))
        level = parent
    return header + nodes.tobytes()


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------

_EMPTY = np.zeros(0, dtype=np.int64)


class SpatialIndex:
    """Query a spatial index section through ``read(offset, length)``.

    The header is read and checked against ``length`` on construction; no
    node is read until the first query.  The top levels (at most
    ``cache_bytes`` of nodes, at least the root) are then read with one call
    and kept; every lower level costs one ``read`` per run of needed sibling
    nodes (runs closer than ``max_gap`` bytes are read as one).

    :param read: ``read(offset, length) -> bytes-like`` over the whole file.
    :param offset: absolute offset of the section.
    :param length: length of the section in bytes.
    :raises IIDFormatError: (``section="spatial_index"``) when the header is
        malformed or disagrees with ``length``; queries raise it too when a
        node they read is inconsistent.
    """

    def __init__(self, read: ReadFn, offset: int, length: int, *, cache_bytes: int = 4096, max_gap: int = 1024):
        self._read = read
        self.offset = int(offset)
        self.length = int(length)
        self._max_gap = max(0, int(max_gap)) // NODE_SIZE_BYTES
        if self.length < HEADER_SIZE:
            raise self._error(f"section is {self.length} bytes, shorter than its {HEADER_SIZE}-byte header", 0)
        raw = _read_exact(read, self.offset, HEADER_SIZE, SECTION)
        try:
            head = SpatialHeader.parse(bytes(raw))
        except ConstructError:
            raise self._error("bad magic, expected b'SIDX'", 0) from None
        self.node_size = int(head.node_size)
        self.num_entries = int(head.num_entries)
        self.num_levels = int(head.num_levels)
        self.num_nodes = int(head.num_nodes)
        if not MIN_NODE_SIZE <= self.node_size <= MAX_NODE_SIZE:
            raise self._error(f"node size {self.node_size} is outside {MIN_NODE_SIZE}..{MAX_NODE_SIZE}", 4)
        self._sizes = level_sizes(self.num_entries, self.node_size)
        if self.num_levels != len(self._sizes):
            raise self._error(
                f"{self.num_levels} levels declared, {len(self._sizes)} follow from "
                f"{self.num_entries} entries and node size {self.node_size}", 12)
        if self.num_nodes != sum(self._sizes):
            raise self._error(f"{self.num_nodes} nodes declared, the tree has {sum(self._sizes)}", 16)
        expected = HEADER_SIZE + self.num_nodes * NODE_SIZE_BYTES
        if self.length != expected:
            raise self._error(f"section is {self.length} bytes, its header implies {expected}", 0)
        # absolute node index of the first node of each level (leaf level = 0)
        self._starts = [sum(self._sizes[l + 1 :]) for l in range(self.num_levels)]
        self._cache: dict[int, np.ndarray] | None = None
        self._cache_bytes = int(cache_bytes)

    def __len__(self) -> int:
        return self.num_entries

    def __repr__(self) -> str:
        return (f"SpatialIndex(entries={self.num_entries}, node_size={self.node_size}, "
                f"levels={self.num_levels}, offset={self.offset})")

    # -- reading ------------------------------------------------------------

    def _error(self, message: str, rel: int) -> IIDFormatError:
        return IIDFormatError(message, section=SECTION, offset=self.offset + rel)

    def _node_offset(self, level: int, index: int) -> int:
        return HEADER_SIZE + (self._starts[level] + index) * NODE_SIZE_BYTES

    def _read_nodes(self, level: int, start: int, stop: int) -> np.ndarray:
        """Nodes ``start .. stop-1`` of ``level`` as an int64 ``(k, 5)``
        matrix (minr, minc, maxr, maxc, ref), read with one call."""
        rel = self._node_offset(level, start)
        data = _read_exact(self._read, self.offset + rel, (stop - start) * NODE_SIZE_BYTES, SECTION)
        return _node_matrix(data)

    def _top(self) -> dict[int, np.ndarray]:
        """The cached top levels (root first), read with a single call."""
        if self._cache is None:
            levels = [self.num_levels - 1]
            total = self._sizes[-1]
            for l in range(self.num_levels - 2, -1, -1):
                if (total + self._sizes[l]) * NODE_SIZE_BYTES > self._cache_bytes:
                    break
                total += self._sizes[l]
                levels.append(l)
            nodes = self._read_nodes(self.num_levels - 1, 0, total)  # contiguous: root first
            cache = {}
            pos = 0
            for l in levels:
                cache[l] = nodes[pos : pos + self._sizes[l]]
                pos += self._sizes[l]
            self._cache = cache
        return self._cache

    def _children(self, level: int, parents: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The children (in ``level``) of the sorted node indices ``parents``
        of ``level + 1``: node matrix, indices within ``level``, and for each
        child the position of its parent in ``parents``."""
        b = self.node_size
        below = self._sizes[level]
        cache = self._top()
        gapped = False
        if level in cache:
            idx = np.concatenate([np.arange(j * b, min(j * b + b, below)) for j in parents])
            nodes = cache[level][idx]
        else:
            # runs of sibling groups; groups close together are read as one
            runs: list[list[int]] = []
            for j in parents:
                a, z = j * b, min(j * b + b, below)
                if runs and a - runs[-1][1] <= self._max_gap:
                    gapped |= a > runs[-1][1]
                    runs[-1][1] = z
                else:
                    runs.append([a, z])
            if len(runs) == 1:
                nodes = self._read_nodes(level, *runs[0])
                idx = np.arange(*runs[0])
            else:
                nodes = np.concatenate([self._read_nodes(level, a, z) for a, z in runs])
                idx = np.concatenate([np.arange(a, z) for a, z in runs])
        par = np.asarray(parents, dtype=np.int64)
        up = idx // b
        pos = np.searchsorted(par, up)
        if gapped:  # drop the nodes read only to bridge a gap
            keep = par[np.minimum(pos, len(par) - 1)] == up
            nodes, idx, pos = nodes[keep], idx[keep], pos[keep]
        return nodes, idx, pos

    # -- queries ------------------------------------------------------------

    def search(self, bbox: Sequence[int]) -> np.ndarray:
        """Keys (int64, ascending) of the entries whose bbox intersects
        ``bbox = (minr, minc, maxr, maxc)`` (half-open; empty boxes never
        intersect anything)."""
        minr, minc, maxr, maxc = (min(max(int(v), 0), MAX_COORD + 1) for v in bbox)
        if self.num_entries == 0 or maxr <= minr or maxc <= minc:
            return _EMPTY.copy()
        qlo = np.array([minr, minc], dtype=np.int64)
        qhi = np.array([maxr, maxc], dtype=np.int64)
        level = self.num_levels - 1
        nodes = self._top()[level]
        idx = np.arange(len(nodes), dtype=np.int64)
        pbox = None  # bbox of the parent of every node in `nodes`
        # one iteration per level: the depth is bounded by the header's level count
        while True:
            lo, hi = nodes[:, 0:2], nodes[:, 2:4]
            extent = (hi - lo).min(axis=1)
            nonempty = extent > 0
            bad = extent < 0  # inverted
            if pbox is not None:  # non-empty children lie inside their parent
                bad |= nonempty & (np.minimum(lo - pbox[:, 0:2], pbox[:, 2:4] - hi).min(axis=1) < 0)
            if bad.any():
                i = int(idx[np.argmax(bad)])
                raise self._error(f"node {i} of level {level} has an inverted bbox or lies outside its parent",
                                  self._node_offset(level, i))
            hit = np.flatnonzero(nonempty & (np.minimum(qhi - lo, hi - qlo).min(axis=1) > 0))
            if hit.size == 0:
                return _EMPTY.copy()
            refs = nodes[hit, 4]
            if level == 0:
                if int(refs.max()) >= self.num_entries:
                    i = int(idx[hit[np.argmax(refs >= self.num_entries)]])
                    raise self._error(f"leaf refers to key {int(refs.max())}, beyond {self.num_entries} entries",
                                      self._node_offset(0, i))
                return np.unique(refs)
            j = idx[hit]
            # internal nodes: ref must be the first child, j * node_size, which
            # is < the size of the level below for every j of this level
            wrong = refs != j * self.node_size
            if wrong.any():
                i = int(j[np.argmax(wrong)])
                raise self._error(f"node {i} of level {level} refers to child {int(refs[np.argmax(wrong)])}, "
                                  f"expected {i * self.node_size}", self._node_offset(level, i))
            level -= 1
            parents = nodes
            nodes, idx, pos = self._children(level, j.tolist())
            pbox = parents[hit[pos]]

    def search_point(self, row: int, col: int) -> np.ndarray:
        """Keys of the entries whose bbox contains pixel ``(row, col)``."""
        row, col = int(row), int(col)
        return self.search((row, col, row + 1, col + 1))


# The node matrix view: every field of SpatialNode has the same type (checked
# here), so a run of nodes is a (k, 5) matrix of that type.
_NODE_FIELD = NODE_DTYPE.fields[NODE_DTYPE.names[0]][0]
assert all(NODE_DTYPE.fields[name][0] == _NODE_FIELD for name in NODE_DTYPE.names)
assert NODE_DTYPE.itemsize == len(NODE_DTYPE.names) * _NODE_FIELD.itemsize


def _node_matrix(data) -> np.ndarray:
    return np.frombuffer(data, dtype=_NODE_FIELD).reshape(-1, len(NODE_DTYPE.names)).astype(np.int64)
