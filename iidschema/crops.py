"""Tight crops of many packed masks, for the writers.

Both format versions store a mask cropped to the tight bbox of its set
pixels (version 1: one region over it; version 0: one region per 8-connected
component, which for most masks is one component over the same bbox).
:func:`crop_runs` finds, for every mask of a packed stream
(:class:`~iidschema.codecs.packbits.PackedMasks`), that tight bbox and the
``rle`` runs of the *cropped* mask, without cropping any pixels: the
transitions of the stream are found eight pixels per byte, paired into True
runs, and each run's first and last pixel are moved into the crop's
coordinates (a True pixel at row ``r``, column ``c`` of the mask is pixel
``(r - r0) * cw + (c - c0)`` of the crop, and a run that spans rows spans
whole rows, so it stays contiguous).  The packbits stream of cropped masks is
rebuilt from those runs only where it is needed (:meth:`CropRuns.packed`).

Everything runs in numpy, a chunk of the stream at a time so that the
temporaries stay in cache; no Python loop over masks or runs.  The results
are those of :func:`iidschema.masks.tight_bbox`, :func:`iidschema.codecs.rle.runs_of`
of the cropped mask and :func:`iidschema.masks.single_component_of_runs`
(``tests/test_crops.py`` compares them).
"""

from __future__ import annotations

import numpy as np

from .codecs.packbits import PackedMasks, chunk_bounds
from .codecs.rle import transitions
from .masks import exclusive_cumsum

__all__ = ["CropRuns", "crop_runs", "packed_slice", "packed_take"]

#: Packed bytes handled per step (about 170 000 runs of the benchmark masks).
CHUNK_BYTES = 1 << 18

_B128 = np.uint8(0x80)


class CropRuns:
    """What :func:`crop_runs` finds for ``n`` masks.

    :ivar tight: ``(n, 4)`` int64, the tight bbox (minr, minc, maxr, maxc) of
        each mask's set pixels relative to the mask; all -1 when it has none.
    :ivar runs: the ``rle`` runs (int64) of every cropped mask, concatenated
        (a mask without set pixels has none).
    :ivar offsets: ``n + 1`` offsets of each mask's runs in ``runs``.
    :ivar single: with ``single=True``: whether the mask certainly is one
        8-connected component (bool), as
        :func:`~iidschema.masks.single_component_of_runs`; else None.
    :ivar true: with ``true_runs=True``: ``(first, last, offsets)``, the
        flat positions (within its mask, int64) of the first and the last
        pixel of every True run of the (uncropped) masks, and ``n + 1``
        offsets of each mask's runs; else None.
    """

    __slots__ = ("tight", "runs", "offsets", "single", "true", "_rle_bytes")

    def __init__(self, tight: np.ndarray, runs: np.ndarray, offsets: np.ndarray, single: np.ndarray | None):
        self.tight = tight
        self.runs = runs
        self.offsets = offsets
        self.single = single
        self.true: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._rle_bytes: tuple[bytes, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.offsets.size - 1

    @property
    def nonempty(self) -> np.ndarray:
        return self.tight[:, 0] >= 0

    @property
    def shapes(self) -> np.ndarray:
        """``(n, 2)`` shape of each crop (0 x 0 for a mask without set pixels)."""
        t = self.tight
        return np.where(t[:, :1] >= 0, t[:, 2:] - t[:, :2], 0)

    def _rle(self) -> tuple[bytes, np.ndarray]:
        """Every cropped mask's ``rle`` payload in one buffer, and ``n + 1``
        byte offsets into it.  Most runs are below 128 (one varint byte, the
        run itself); the few longer ones get their continuation bytes
        inserted."""
        if self._rle_bytes is not None:
            return self._rle_bytes
        runs = self.runs
        data = runs.astype(np.uint8)
        big = (runs >= 0x80).nonzero()[0]
        bounds = self.offsets
        if big.size:
            from .codecs.rle import varint_sizes

            values = runs[big]
            extra = varint_sizes(values) - 1  # continuation bytes of each
            data[big] = (values & 0x7F).astype(np.uint8) | _B128
            cum = exclusive_cumsum(extra)
            k = np.arange(int(cum[-1]), dtype=np.int64) - np.repeat(cum[:-1], extra) + 1  # byte 1.. of its varint
            last = k == np.repeat(extra, extra)
            cont = (np.repeat(values, extra) >> (7 * k)) & 0x7F
            cont = cont.astype(np.uint8) | np.where(last, np.uint8(0), _B128)
            at = np.repeat(big + cum[:-1], extra) + k  # in the output
            data = _insert(data, at, cont)
            owner = np.searchsorted(self.offsets, big, side="right") - 1
            per_mask = np.bincount(owner, weights=extra, minlength=len(self)).astype(np.int64)
            bounds = self.offsets + exclusive_cumsum(per_mask)
        self._rle_bytes = (data.tobytes(), bounds)
        return self._rle_bytes

    def rle_sizes(self) -> np.ndarray:
        """Byte size of each cropped mask's ``rle`` payload (0 without set pixels)."""
        bounds = self._rle()[1]
        return bounds[1:] - bounds[:-1]

    def rle_payloads(self, which: np.ndarray) -> list[bytes]:
        """The ``rle`` payloads of the cropped masks ``which``."""
        data, bounds = self._rle()
        which = np.asarray(which, dtype=np.int64)
        return list(map(data.__getitem__, map(slice, bounds[which].tolist(), bounds[which + 1].tolist())))

    def packed(self, which: np.ndarray) -> PackedMasks:
        """The packbits stream of the cropped masks ``which`` (nonempty ones),
        rebuilt from their runs: one ``np.repeat`` of alternating pixel
        values and one ``np.packbits``."""
        from .codecs.rle import select_runs

        which = np.asarray(which, dtype=np.int64)
        shapes = self.shapes[which]
        pixels = shapes[:, 0] * shapes[:, 1]
        runs, offsets = select_runs(self.runs, self.offsets, which)
        counts = offsets[1:] - offsets[:-1]
        # Each mask's runs (False, True, ...), then a False run of its
        # padding (0..7 pixels).
        parity = np.arange(runs.size, dtype=np.int64) - np.repeat(offsets[:-1], counts)
        pad_at = exclusive_cumsum(counts + 1)[1:] - 1
        lengths = _insert(runs, pad_at, (-pixels) & 7)
        values = _insert((parity & 1).astype(np.bool_), pad_at, np.zeros(pad_at.size, dtype=np.bool_))
        bits = np.repeat(values, lengths)
        starts = exclusive_cumsum((pixels + 7) >> 3)
        return PackedMasks(np.packbits(bits), starts, shapes[:, 0].copy(), shapes[:, 1].copy())


def packed_slice(pm: PackedMasks, a: int, b: int) -> PackedMasks:
    """Masks ``a:b`` of ``pm`` (views, no copy)."""
    base = int(pm.starts[a])
    return PackedMasks(pm.packed[base : int(pm.starts[b])], pm.starts[a : b + 1] - base, pm.heights[a:b], pm.widths[a:b])


def packed_take(pm: PackedMasks, which: np.ndarray) -> PackedMasks:
    """Masks ``which`` of ``pm``, in that order (their bytes copied)."""
    from .codecs.bulk import join_payloads

    which = np.asarray(which, dtype=np.int64)
    sizes = pm.starts[which + 1] - pm.starts[which]
    data = np.frombuffer(join_payloads(pm.packed, pm.starts[which], sizes), dtype=np.uint8)
    return PackedMasks(data, exclusive_cumsum(sizes), pm.heights[which], pm.widths[which])


def crop_runs(pm: PackedMasks, single: bool = False, true_runs: bool = False) -> CropRuns:
    """Tight bboxes and cropped ``rle`` runs of every mask of ``pm`` (see the
    module docstring); with ``single``, also the one-component test; with
    ``true_runs``, also the True runs of the masks themselves
    (:attr:`CropRuns.true`)."""
    count = len(pm)
    tight = np.full((count, 4), -1, dtype=np.int64)
    nruns = np.zeros(count, dtype=np.int64)
    one = np.zeros(count, dtype=np.bool_) if single else None
    kept: list[tuple[np.ndarray, np.ndarray]] | None = [] if true_runs else None
    ntrue = np.zeros(count, dtype=np.int64)
    pieces = []
    cuts = chunk_bounds(pm.starts, CHUNK_BYTES)
    for a, b in zip(cuts, cuts[1:]):
        base = pm.starts[a]
        x = pm.packed[base : pm.starts[b]]
        runs = _chunk(
            x, pm.starts[a : b + 1] - base, pm.pixels[a:b], pm.widths[a:b], tight[a:b], nruns[a:b],
            None if one is None else one[a:b], kept, ntrue[a:b],
        )
        pieces.append(runs)
    runs = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    out = CropRuns(tight, runs, exclusive_cumsum(nruns), one)
    if kept is not None:
        first = np.concatenate([f for f, _ in kept]) if kept else np.zeros(0, np.int64)
        last = np.concatenate([e for _, e in kept]) if kept else np.zeros(0, np.int64)
        out.true = (first, last, exclusive_cumsum(ntrue))
    return out


def _chunk(
    x: np.ndarray, starts: np.ndarray, pixels: np.ndarray, widths: np.ndarray,
    tight: np.ndarray, nruns: np.ndarray, single: np.ndarray | None,
    kept: list[tuple[np.ndarray, np.ndarray]] | None = None, ntrue: np.ndarray | None = None,
) -> np.ndarray:
    """One chunk of :func:`crop_runs`: fills ``tight``, ``nruns`` and
    ``single`` of its masks and returns their cropped runs; appends the
    True runs (first and last pixel) to ``kept`` and their count per mask
    to ``ntrue`` when given."""
    if not x.size:
        return np.zeros(0, np.int64)
    changes = transitions(x, starts, pixels)
    bit_starts = starts * 8
    first_change = np.searchsorted(changes, bit_starts)
    per_mask = first_change[1:] - first_change[:-1]
    # Positions within a mask, and everything derived from them, in int32
    # when the chunk allows it (half the memory traffic of int64).
    it = np.int32 if int(bit_starts[-1]) < (1 << 30) else np.int64
    local = (changes - np.repeat(bit_starts[:-1], per_mask)).astype(it)
    pixels = pixels.astype(it)
    widths = widths.astype(it)
    # Changes alternate: a True run starts at an even one (within its mask)
    # and ends at the next; a mask whose last pixel is True has an odd
    # count, and its last run ends at the mask's end.
    odd = per_mask & 1
    # (Insertions go through a boolean mask: numpy copies the runs between
    # them at memcpy speed, where an index array would cost a gather.)
    if odd.any():
        with_end = per_mask + odd
        closing = odd.nonzero()[0]
        at = exclusive_cumsum(with_end)[1:][closing] - 1
        bounds = _insert(local, at, pixels[closing])
    else:
        with_end = per_mask
        bounds = local
    true_runs = with_end >> 1
    has = true_runs > 0
    if not has.any():
        return np.zeros(0, np.int64)
    starts_px = bounds[0::2]
    last_px = bounds[1::2] - 1
    if kept is not None:
        kept.append((starts_px.astype(np.int64), last_px.astype(np.int64)))
        ntrue[:] = true_runs  # type: ignore[index]
    w = np.repeat(widths, true_runs)
    wf = w.astype(np.float64)
    # Floor division through float64 (several times faster than int64's):
    # exact while position + width < 2**52, i.e. for any mask that fits in
    # memory (p / w = q + r / w is at least 1 / w below q + 1, more than
    # half a unit in the last place there).
    r_first = (starts_px / wf).astype(it)
    c_first = starts_px - r_first * w
    r_last = (last_px / wf).astype(it)
    c_last = last_px - r_last * w
    first = exclusive_cumsum(true_runs)[:-1][has]
    last = first + true_runs[has] - 1
    one_row = r_first == r_last
    # A run over several rows covers the end of one row and the start of the next.
    cmin = np.where(one_row, c_first, 0)
    cmax = np.where(one_row, c_last, w - 1)
    box = np.empty((first.size, 4), dtype=it)
    box[:, 0] = r_first[first]
    box[:, 1] = np.minimum.reduceat(cmin, first)
    box[:, 2] = r_last[last] + 1
    box[:, 3] = np.maximum.reduceat(cmax, first) + 1
    tight[has] = box
    if single is not None:
        _single(single, has, first, last, r_first, c_first, r_last, c_last, w)
    # The runs' first and last pixels in the crop.
    reps = true_runs[has]
    r0 = np.repeat(box[:, 0], reps)
    c0 = np.repeat(box[:, 1], reps)
    cw = np.repeat(box[:, 3] - box[:, 1], reps)
    s = (r_first - r0) * cw + (c_first - c0)
    e = (r_last - r0) * cw + (c_last - c0) + 1
    # Runs that only cropped-away pixels separated (one ending in the crop's
    # last column, the next starting in its first column on the next row)
    # are one run of the crop.
    if s.size > 1:
        joins = s[1:] == e[:-1]
        joins[last[:-1]] = False  # the last run of a mask and the first of the next
        if joins.any():
            keep_e = np.ones(s.size, dtype=np.bool_)
            keep_e[:-1] = ~joins
            keep_s = np.ones(s.size, dtype=np.bool_)
            keep_s[1:] = ~joins
            reps = reps - np.add.reduceat((~keep_e).astype(reps.dtype), first)
            s, e = s[keep_s], e[keep_e]
            first = exclusive_cumsum(reps)[:-1]
            last = first + reps - 1
    # Runs of a crop: s0, e0 - s0, s1 - e0, ..., e_last - s_last, and the
    # trailing False run (crop pixels - e_last) when it is not empty.
    inter = np.empty(2 * s.size, dtype=it)
    inter[0::2] = s
    inter[1::2] = e
    core = np.empty_like(inter)
    core[0] = inter[0]
    np.subtract(inter[1:], inter[:-1], out=core[1:])
    core[2 * first] = inter[2 * first]
    trail = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) - e[last]
    tails = trail > 0
    n_core = 2 * reps
    if tails.any():
        per = n_core + tails
        at = tails.nonzero()[0]
        runs = _insert(core, exclusive_cumsum(per)[1:][at] - 1, trail[at])
    else:
        per = n_core
        runs = core
    nruns[has] = per
    return runs.astype(np.int64, copy=False)


def _insert(values: np.ndarray, at: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``values`` with ``extra[i]`` inserted so that it lands at index
    ``at[i]`` of the result (``at`` ascending, in result coordinates)."""
    out = np.empty(values.size + at.size, dtype=values.dtype)
    keep = np.ones(out.size, dtype=np.bool_)
    keep[at] = False
    out[keep] = values
    out[at] = extra
    return out


def _single(
    out: np.ndarray, has: np.ndarray, first: np.ndarray, last: np.ndarray,
    ra: np.ndarray, ca: np.ndarray, rb: np.ndarray, cb: np.ndarray, w: np.ndarray,
) -> None:
    """:func:`~iidschema.masks.single_component_of_runs` from the True runs'
    first (``ra``, ``ca``) and last (``rb``, ``cb``) pixels: every run joins
    its own rows, and each run touches the next one on the next row."""
    span = rb - ra
    first_end = np.where(span == 0, cb, w - 1)
    last_start = np.where(span == 0, ca, 0)
    bad = (span == 1) & (ca > cb + 1)
    if ra.size > 1:
        apart = (ra[1:] != rb[:-1] + 1) | (last_start[:-1] > first_end[1:] + 1) | (ca[1:] > cb[:-1] + 1)
        apart[last[:-1]] = False  # the last run of a mask and the first of the next
        bad[:-1] |= apart
    out[has] = np.add.reduceat(bad.astype(np.int64), first) == 0
