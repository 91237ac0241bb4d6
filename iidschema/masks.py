"""Masks <-> regions.

A segment is stored as *regions*: the 8-connected components of its mask,
each with its own tight bbox in absolute image coordinates and holding only
that component's pixels.  This is what iidfile 0.2.0 writes (it used
scikit-image's ``label(connectivity=2)``); scipy.ndimage labels components
in the same raster order of first pixels, so our version-0 output is
byte-identical for boolean masks.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from .errors import IIDLimitError

__all__ = ["as_bool_mask", "split_regions", "sorted_unique", "tight_bbox", "tight_bboxes_of_runs", "single_component_of_runs", "compose_mask", "check_pixels", "MAX_MASK_PIXELS"]

#: Largest mask (in pixels) decoded or composed without the caller raising
#: this limit.  A region or segment bbox is only a claim made by the file: a
#: few bytes can claim 100 000 x 100 000 pixels, so, like Pillow's
#: ``Image.MAX_IMAGE_PIXELS``, decoding refuses such claims unless the user
#: trusts the file (set ``iidschema.masks.MAX_MASK_PIXELS`` or the
#: environment variable ``IIDSCHEMA_MAX_MASK_PIXELS``).  Default 2**31 pixels
#: (a 2 GiB boolean array).
MAX_MASK_PIXELS = int(os.environ.get("IIDSCHEMA_MAX_MASK_PIXELS", 2**31))


def check_pixels(height: int, width: int, what: str) -> None:
    """Refuse to allocate a ``height x width`` mask above :data:`MAX_MASK_PIXELS`."""
    if height * width > MAX_MASK_PIXELS:
        raise IIDLimitError(
            f"{what} of {height} x {width} pixels exceeds iidschema.masks.MAX_MASK_PIXELS ({MAX_MASK_PIXELS}); "
            "raise it (or set IIDSCHEMA_MAX_MASK_PIXELS) if you trust this file"
        )

_EIGHT = np.ones((3, 3), dtype=bool)

BBox = tuple[int, int, int, int]


def as_bool_mask(mask: object) -> np.ndarray:
    """``mask`` as a C-contiguous 2-D bool array (non-zero = True).

    Raises ``ValueError``/``TypeError`` with a plain explanation otherwise.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D, got {arr.ndim}-D with shape {arr.shape}")
    if arr.dtype == bool:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean-convertible (bool or numeric), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr != 0)


def split_regions(mask: np.ndarray, origin: tuple[int, int]) -> list[tuple[BBox, np.ndarray]]:
    """The 8-connected components of ``mask`` as ``(absolute bbox, component mask)``.

    Components come in raster order of their first pixel.  ``origin`` is the
    (row, col) of the mask's top-left pixel in the image.
    """
    if mask.size == 0 or not mask.any():
        return []
    from scipy import ndimage  # imported on first use: reading files never needs it

    labels, count = ndimage.label(mask, structure=_EIGHT)
    r0, c0 = origin
    out = []
    for index, slc in enumerate(ndimage.find_objects(labels), start=1):
        rs, cs = slc
        component = labels[slc] == index
        out.append(((r0 + rs.start, c0 + cs.start, r0 + rs.stop, c0 + cs.stop), component))
    return out


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` as int64, without sorting when ``keys`` already is
    strictly increasing (group keys as written: an O(n) check instead of an
    O(n log n) sort of up to millions of keys)."""
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if keys.size < 2 or bool((keys[1:] > keys[:-1]).all()):
        return keys
    return np.unique(keys)


def exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    """``[0, v0, v0+v1, ...]`` (int64, one longer than ``values``): where each
    of many back-to-back pieces of those sizes starts, and the total last."""
    out = np.zeros(np.size(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


def tight_bbox(mask: np.ndarray, origin: tuple[int, int]) -> BBox | None:
    """Absolute bbox of the set pixels of ``mask`` (None when there are none)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, c0 = origin
    return (r0 + int(rows[0]), c0 + int(cols[0]), r0 + int(rows[-1]) + 1, c0 + int(cols[-1]) + 1)


def tight_bboxes_of_runs(runs: np.ndarray, offsets: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Tight bboxes of many masks, from their row-major runs (``rle`` order).

    ``runs``/``offsets`` are what :func:`iidschema.codecs.rle.runs_of_packed`
    returns, ``widths`` the masks' widths.  Returns an ``(n, 4)`` int64 array
    of (minr, minc, maxr, maxc) *relative to each mask*, with all -1 for a
    mask without set pixels: :func:`tight_bbox` of each mask, vectorised.

    Run ``j`` of a mask is True when ``j`` is odd.  A True run ``[a, b)``
    that stays in one row covers columns ``a % w .. (b-1) % w``; one that
    crosses a row end covers the last column of its first row and the first
    column of the next, so every column from 0 to ``w - 1``.
    """
    count = offsets.size - 1
    out = np.full((count, 4), -1, dtype=np.int64)
    # In pieces of about _RUNS_PER_STEP runs, so that the temporaries stay in cache.
    cuts = np.searchsorted(offsets, np.arange(0, int(offsets[-1]), _RUNS_PER_STEP), side="right") - 1
    cuts = [0, *np.unique(cuts[(cuts > 0) & (cuts < count)]).tolist(), count]
    for a, b in zip(cuts, cuts[1:]):
        base = offsets[a]
        _tight_step(runs[base : offsets[b]], offsets[a : b + 1] - base, widths[a:b], out[a:b])
    return out


_RUNS_PER_STEP = 1 << 15


def _tight_step(runs: np.ndarray, offsets: np.ndarray, widths: np.ndarray, out: np.ndarray) -> None:
    count = offsets.size - 1
    nruns = offsets[1:] - offsets[:-1]
    ntrue = nruns >> 1  # runs alternate False, True, ...: every second one is True
    has = ntrue > 0
    if not has.any():
        return
    starts, ends, w = _true_runs(runs, offsets, widths, nruns, ntrue)
    first_row = starts // w
    last_row = (ends - 1) // w
    one_row = first_row == last_row
    cmin = starts - first_row * w
    cmin[~one_row] = 0
    cmax = ends - 1 - last_row * w
    cmax[~one_row] = (w - 1)[~one_row]
    # The True runs of each mask are consecutive.
    head = np.zeros(count, dtype=np.int64)
    np.cumsum(ntrue[:-1], out=head[1:])
    head, tail = head[has], (head + ntrue - 1)[has]
    out[has, 0] = first_row[head]
    out[has, 1] = np.minimum.reduceat(cmin, head)
    out[has, 2] = last_row[tail] + 1
    out[has, 3] = np.maximum.reduceat(cmax, head) + 1


_ALT = (np.arange(1 << 17) & 1).astype(np.uint8)


def _true_runs(runs: np.ndarray, offsets: np.ndarray, widths: np.ndarray, nruns: np.ndarray,
               ntrue: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat ``[start, end)`` of every True run relative to its own mask, and
    that mask's width, for runs laid out as :func:`tight_bboxes_of_runs` takes
    them (``nruns``/``ntrue``: runs and True runs per mask)."""
    count = offsets.size - 1
    # Run j is True when j - offsets[mask] is odd: j's parity flipped for
    # masks starting at an odd offset.
    flip = np.repeat((offsets[:-1] & 1).astype(np.uint8), nruns)
    flip ^= _ALT[: runs.size] if runs.size <= _ALT.size else (np.arange(runs.size) & 1).astype(np.uint8)
    true = flip.view(np.bool_)
    ends = np.cumsum(runs)
    # Pixel offset of each mask in the cumulative sum (its first run's start).
    base = np.zeros(count, dtype=np.int64)
    nonempty = nruns > 0
    first = offsets[:-1][nonempty]
    base[nonempty] = ends[first] - runs[first]
    ends = ends[true]
    ends -= np.repeat(base, ntrue)
    return ends - runs[true], ends, np.repeat(widths, ntrue)


def single_component_of_runs(runs: np.ndarray, offsets: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Which masks certainly hold exactly one 8-connected component (bool),
    from their row-major runs (as :func:`tight_bboxes_of_runs` takes them).

    A sufficient test, exact where it says True: every row between the first
    and the last set row holds one segment of set pixels, and each segment
    touches the next row's (8-connectivity: their column ranges overlap or
    meet diagonally).  Convex blobs and lines pass; a mask that fails (U
    shapes, several islands, empty masks) simply goes through labelling.
    Such a mask's only component is the mask cropped to its tight bbox, which
    is what lets the version-0 writer skip ``ndimage.label`` for most masks.

    A True run ``[a, b)`` (flat, relative to its mask of width ``w``) covers
    rows ``a // w`` .. ``(b - 1) // w``; spanning two rows it is connected
    when its two pieces meet (``a % w <= (b - 1) % w + 1``), spanning more a
    full row links them.
    """
    count = offsets.size - 1
    out = np.zeros(count, dtype=np.bool_)
    nruns = offsets[1:] - offsets[:-1]
    ntrue = nruns >> 1
    has = ntrue > 0
    if not has.any():
        return out
    starts, ends, w = _true_runs(runs, offsets, widths, nruns, ntrue)
    ra = starts // w
    rb = (ends - 1) // w
    ca = starts - ra * w  # column of the first pixel
    cb = ends - 1 - rb * w  # column of the last pixel
    span = rb - ra
    # Segment of the run in its first row and in its last row (inclusive).
    first_end = np.where(span == 0, cb, w - 1)
    last_start = np.where(span == 0, ca, 0)
    ok = (span != 1) | (ca <= cb + 1)
    # Consecutive True runs of the same mask: the next starts on the row
    # after this one ends, and the two segments touch.
    nxt_ok = (ra[1:] == rb[:-1] + 1) & (last_start[:-1] <= first_end[1:] + 1) & (ca[1:] <= cb[:-1] + 1)
    # Pairs that straddle two masks do not count: mark them fine.
    head = np.zeros(count, dtype=np.int64)
    np.cumsum(ntrue[:-1], out=head[1:])
    boundary = head[has][1:] - 1  # last True run of each mask but the last
    pair_ok = np.ones(max(ntrue.sum() - 1, 0), dtype=np.bool_)
    if pair_ok.size:
        pair_ok[:] = nxt_ok
        pair_ok[boundary] = True
    bad = ~ok
    bad[:-1] |= ~pair_ok
    # A mask passes when none of its True runs is bad (bad per run, summed).
    bad_count = np.add.reduceat(bad.astype(np.int64), head[has])
    out[has] = bad_count == 0
    return out


def compose_mask(bbox: BBox, regions: Iterable[tuple[BBox, np.ndarray]]) -> np.ndarray:
    """OR the region masks into one mask of the segment ``bbox``.

    Region pixels outside ``bbox`` are clipped (readers reject such regions
    before they get here; this keeps the function total).
    """
    minr, minc, maxr, maxc = bbox
    check_pixels(max(maxr - minr, 0), max(maxc - minc, 0), "segment mask")
    out = np.zeros((max(maxr - minr, 0), max(maxc - minc, 0)), dtype=bool)
    for (rminr, rminc, rmaxr, rmaxc), m in regions:
        r0, c0 = max(rminr, minr), max(rminc, minc)
        r1, c1 = min(rmaxr, maxr), min(rmaxc, maxc)
        if r0 >= r1 or c0 >= c1:
            continue
        out[r0 - minr : r1 - minr, c0 - minc : c1 - minc] |= m[r0 - rminr : r1 - rminr, c0 - rminc : c1 - rminc]
    return out
