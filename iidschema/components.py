"""8-connected components of many masks at once, from their True runs.

Version 0 stores a segment as its 8-connected components, each a region
over its own tight bbox holding only its pixels (what iidfile 0.2.0 writes
with scikit-image's ``label(connectivity=2)``, and
:func:`iidschema.masks.split_regions` with ``scipy.ndimage.label``).
:func:`components` finds them for many masks without labelling pixels: the
True runs of the masks (:attr:`iidschema.crops.CropRuns.true`) are cut into
row segments, a segment touches a segment of the next row when their column
ranges overlap or meet diagonally, and a vectorised union-find joins the
segments that touch.  A component's first segment in raster order names it,
so components come in the raster order of their first pixel, as
``ndimage.label`` numbers them.  The payloads (packbits of each component
over its bbox) are made from the segments with one ``np.repeat`` and one
``np.packbits`` for all.  ``tests/test_components.py`` compares everything
with :func:`~iidschema.masks.split_regions`.
"""

from __future__ import annotations

import numpy as np

from .codecs.packbits import PackedMasks
from .masks import exclusive_cumsum

__all__ = ["Components", "components"]


class Components:
    """The components of ``m`` masks.

    :ivar counts: components of each mask (``m``, int64); mask ``i``'s are
        ``counts[:i].sum() ..`` in the arrays below, in raster order of their
        first pixel.
    :ivar boxes: ``(c, 4)`` int64 bbox of each component relative to its
        mask (minr, minc, maxr, maxc; max exclusive).
    :ivar packed: the packbits payload of each component (over its bbox).
    """

    __slots__ = ("counts", "boxes", "packed")

    def __init__(self, counts: np.ndarray, boxes: np.ndarray, packed: PackedMasks):
        self.counts = counts
        self.boxes = boxes
        self.packed = packed


#: Runs handled together: the arrays of one pass take a few hundred bytes
#: per run (row segments, touching pairs, union-find), so a batch of large
#: noisy masks (tens of millions of runs) is taken a group of masks at a time.
MAX_RUNS = 1 << 20


def components(first: np.ndarray, last: np.ndarray, offsets: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> Components:
    """The 8-connected components of ``m`` masks given by their True runs:
    run ``j`` of mask ``i`` (``offsets[i] <= j < offsets[i + 1]``, ascending)
    covers the flat positions ``first[j] .. last[j]`` of that
    ``heights[i] x widths[i]`` mask.

    Masks are taken in groups of about :data:`MAX_RUNS` runs (a mask with
    more is a group of its own); components never cross masks, so the
    groups' results are simply put one after the other."""
    m = offsets.size - 1
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    if m == 0 or int(offsets[-1]) <= MAX_RUNS:
        return _components(first, last, offsets, heights, widths)
    group = offsets[:-1] // MAX_RUNS
    cuts = [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), m]
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        r0, r1 = int(offsets[a]), int(offsets[b])
        parts.append(_components(first[r0:r1], last[r0:r1], offsets[a : b + 1] - r0, heights[a:b], widths[a:b]))
    sizes = [int(p.packed.starts[-1]) for p in parts]
    shift = exclusive_cumsum(np.array(sizes, dtype=np.int64))
    starts = np.concatenate([p.packed.starts[:-1] + s for p, s in zip(parts, shift[:-1].tolist())] + [shift[-1:]])
    packed = PackedMasks(np.concatenate([p.packed.packed[: int(p.packed.starts[-1])] for p in parts]), starts,
                         np.concatenate([p.packed.heights for p in parts]), np.concatenate([p.packed.widths for p in parts]))
    return Components(np.concatenate([p.counts for p in parts]), np.concatenate([p.boxes for p in parts]), packed)


def _components(first: np.ndarray, last: np.ndarray, offsets: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> Components:
    """:func:`components` of masks holding few enough runs for one pass."""
    m = offsets.size - 1
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    nruns = offsets[1:] - offsets[:-1]
    run_mask = np.repeat(np.arange(m, dtype=np.int64), nruns)
    w = widths[run_mask]
    ra, rb = first // w, last // w
    ca, cb = first - ra * w, last - rb * w
    # Row segments (row, first column, last column) of every run, in raster order.
    per_run = rb - ra + 1
    seg_run = np.repeat(np.arange(first.size, dtype=np.int64), per_run)
    k = np.arange(seg_run.size, dtype=np.int64) - np.repeat(exclusive_cumsum(per_run)[:-1], per_run)
    row = ra[seg_run] + k
    c0 = np.where(k == 0, ca[seg_run], 0)
    c1 = np.where(k == per_run[seg_run] - 1, cb[seg_run], w[seg_run] - 1)
    seg_mask = run_mask[seg_run]
    nseg = seg_run.size
    # Segments that touch: for each segment, the range of segments of the
    # next row of its mask whose columns reach [c0 - 1, c1 + 1].  Keys number
    # the rows of all masks one after another, columns inside a row.
    span = int(widths.max()) + 3 if m else 3
    grow = exclusive_cumsum(heights)[:-1][seg_mask] + row
    key0 = grow * span + c0 + 1
    key1 = grow * span + c1 + 1
    below = (grow + 1) * span
    lo = np.searchsorted(key1, below + c0, side="left")
    hi = np.searchsorted(key0, below + c1 + 2, side="right")
    touching = np.where(row + 1 < heights[seg_mask], np.maximum(hi - lo, 0), 0)
    a = np.repeat(np.arange(nseg, dtype=np.int64), touching)
    b = np.repeat(lo, touching) + (np.arange(a.size, dtype=np.int64) - np.repeat(exclusive_cumsum(touching)[:-1], touching))
    root = _roots(nseg, a, b)
    # Components in the order of their first segment (the root: the union
    # keeps the smaller index), their segments in raster order.
    is_root = root == np.arange(nseg, dtype=np.int64)
    comp_root = is_root.nonzero()[0]
    comp_of = (np.cumsum(is_root) - 1)[root]
    order = np.argsort(comp_of, kind="stable")
    per_comp = np.bincount(comp_of, minlength=comp_root.size)
    start = exclusive_cumsum(per_comp)[:-1]
    row, c0, c1 = row[order], c0[order], c1[order]
    boxes = np.empty((comp_root.size, 4), dtype=np.int64)
    boxes[:, 0] = row[start]
    boxes[:, 2] = row[start + per_comp - 1] + 1
    if start.size:
        boxes[:, 1] = np.minimum.reduceat(c0, start)
        boxes[:, 3] = np.maximum.reduceat(c1, start) + 1
    counts = np.bincount(seg_mask[comp_root], minlength=m).astype(np.int64)
    return Components(counts, boxes, _payloads(boxes, per_comp, row, c0, c1))


def _roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find of ``n`` nodes joined by the pairs ``(a, b)``: the root of
    each node, which is the smallest node of its set."""
    parent = np.arange(n, dtype=np.int64)
    while a.size:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        # Hook each larger root under the smaller, then point every node at
        # its root (parent[x] <= x throughout, so the roots stay the minima).
        np.minimum.at(parent, np.maximum(pa, pb)[differ], np.minimum(pa, pb)[differ])
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
        keep = differ  # pairs already joined stay joined
        a, b = a[keep], b[keep]
    return parent


def _payloads(boxes: np.ndarray, per_comp: np.ndarray, row: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> PackedMasks:
    """Packbits of every component over its bbox, from its segments (grouped
    by component, in raster order): alternating False and True runs, the
    False ones the gaps between segments in the bbox's flat order."""
    heights = boxes[:, 2] - boxes[:, 0]
    widths = boxes[:, 3] - boxes[:, 1]
    comp = np.repeat(np.arange(boxes.shape[0], dtype=np.int64), per_comp)
    begin = (row - boxes[comp, 0]) * widths[comp] + (c0 - boxes[comp, 1])
    end = begin + (c1 - c0 + 1)
    gap = np.empty_like(begin)
    if begin.size:
        gap[0] = begin[0]
        gap[1:] = begin[1:] - end[:-1]
    first = exclusive_cumsum(per_comp)[:-1]
    gap[first] = begin[first]
    pixels = heights * widths
    # Per component: gap, segment, gap, segment, ..., then the rest of the
    # bbox and the padding to a whole byte.
    lengths = np.empty(2 * begin.size + per_comp.size, dtype=np.int64)
    values = np.zeros(lengths.size, dtype=np.bool_)
    slot = np.arange(begin.size, dtype=np.int64) * 2 + comp
    lengths[slot] = gap
    lengths[slot + 1] = end - begin
    values[slot + 1] = True
    tail = exclusive_cumsum(2 * per_comp + 1)[1:] - 1
    lengths[tail] = pixels - end[first + per_comp - 1] + ((-pixels) & 7) if per_comp.size else 0
    bits = np.repeat(values, lengths)
    return PackedMasks(np.packbits(bits), exclusive_cumsum((pixels + 7) >> 3), heights, widths)
