"""Codec 1, ``rle``: row-major run lengths as unsigned LEB128 varints.

Byte format (also in docs/CODECS.md):

* Flatten the mask row-major (C order) into ``h*w`` pixels.
* Split it into maximal runs of equal pixels, alternately False and True,
  *starting with False*: the first run is zero-long when the first pixel is
  True; every later run is at least 1 long.  An empty mask (``h*w == 0``)
  has no runs at all.
* Write each run length as an unsigned LEB128 varint (7 bits per byte, least
  significant group first, high bit set on every byte but the last), with
  nothing between or after them.  A varint is canonical (its last byte is not
  0x00 unless it is the only byte) and at most 9 bytes (values below 2**63).

A decoder therefore checks, before allocating the output: every varint is
complete, canonical and short enough; only the first run may be 0; and the
runs add up to exactly ``h*w``.

Both directions are vectorised with numpy (a handful of array operations per
mask, no Python loop per run) because region masks are many and small: this
has to keep up with pycocotools' C implementation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import IIDCodecError
from .base import MaskCodec, as_mask, check_shape
from .packbits import PackedMasks, check_shapes, chunk_bounds, pack_masks

__all__ = [
    "RLECodec",
    "MAX_VARINT_BYTES",
    "runs_of",
    "runs_of_packed",
    "varint_sizes",
    "encode_varints",
    "decode_varints",
    "rle_encode",
    "rle_decode",
    "rle_encode_many",
    "rle_decode_many",
    "rle_payloads",
    "rle_sizes",
    "RunBatch",
]

#: Longest varint accepted: 9 bytes hold 63 bits, so values stay in int64.
MAX_VARINT_BYTES = 9

# False, True, False, ...: the value of run i is i & 1.
_ALTERNATING = (np.arange(1 << 16) & 1).astype(np.bool_)

# Implementation note: these functions run once per region mask, and masks are
# small, so numpy's per-call overhead dominates.  They therefore use the
# cheapest spelling of each step (``.nonzero()[0]`` rather than
# ``np.flatnonzero``, ``x[x.argmax()]`` rather than ``x.max()``, slicing rather
# than ``np.diff``, ``np.count_nonzero`` rather than ``.any()``/``.all()``,
# numpy scalars rather than Python ints), special-case one-byte varints, and
# loop only over byte positions within a varint (at most 9), never over runs.
_I1 = np.intp(1)
_B1 = np.uint8(1)
_B7 = np.uint8(7)
_B127 = np.uint8(0x7F)
_B128 = np.uint8(0x80)
_I7 = np.int64(7)
_I127 = np.int64(0x7F)
_P128 = np.intp(0x80)
# Two-byte varint look-up tables indexed by the byte before the last one.
_MUL2 = np.where(np.arange(256) >= 0x80, 0x80, 1).astype(np.intp)
_ADD2 = np.where(np.arange(256) >= 0x80, np.arange(256) - 0x80, 0).astype(np.intp)


def _alternating(n: int) -> np.ndarray:
    return _ALTERNATING[:n] if n <= _ALTERNATING.size else (np.arange(n) & 1).astype(np.bool_)


def runs_of(mask: np.ndarray) -> np.ndarray:
    """Run lengths (int64) of the row-major mask, starting with a False run."""
    m = mask if type(mask) is np.ndarray and mask.dtype == np.bool_ and mask.ndim == 2 else as_mask(mask)
    n = m.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    f = m.reshape(-1)
    # Run boundaries: 0, then 0 again when pixel 0 is True (the zero-long
    # first run), every position whose pixel differs from the one before,
    # and n; the runs are their successive differences.
    change = (f[1:] != f[:-1]).nonzero()[0]
    lead = 2 if f[0] else 1
    bounds = np.empty(change.size + lead + 1, dtype=np.int64)
    bounds[:lead] = 0
    np.add(change, _I1, out=bounds[lead:-1])
    bounds[-1] = n
    return bounds[1:] - bounds[:-1]


#: Bytes of packed stream handled per step of :func:`runs_of_packed`: its
#: temporaries (a few times the number of transitions) then stay in cache.
RUNS_CHUNK_BYTES = 1 << 16


def runs_of_packed(pm: PackedMasks) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of every mask of ``pm``, computed on the packed stream.

    Returns ``(runs, offsets)``: the runs of all masks concatenated (int64,
    each mask's as :func:`runs_of` gives them) and ``len(pm) + 1`` offsets
    into them.  No Python loop over masks or runs: the transitions are found
    eight pixels per byte by XOR-ing the stream with itself shifted by one
    bit, which is what makes bulk encoding cheap.
    """
    count = len(pm)
    offsets = np.zeros(count + 1, dtype=np.int64)
    pieces = []
    cuts = chunk_bounds(pm.starts, RUNS_CHUNK_BYTES)
    for a, b in zip(cuts, cuts[1:]):
        runs = _runs_chunk(pm.packed[pm.starts[a] : pm.starts[b]], pm.starts[a : b + 1] - pm.starts[a], pm.pixels[a:b])
        pieces.append(runs)
    nruns = np.zeros(count, dtype=np.int64)
    # A mask has one run more than transitions inside it, or none when empty;
    # _runs_chunk returns the count per mask as its second item.
    out = []
    for (runs, per_mask), a, b in zip(pieces, cuts, cuts[1:]):
        out.append(runs)
        nruns[a:b] = per_mask
    np.cumsum(nruns, out=offsets[1:])
    return (np.concatenate(out) if out else np.zeros(0, np.int64)), offsets


def transitions(x: np.ndarray, starts: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Ascending bit positions in ``x`` (packed masks: mask ``i`` is
    ``pixels[i]`` bits from byte ``starts[i]``) of the pixels that differ
    from the pixel before them in the same mask (before a mask's first
    pixel: False).  Found eight pixels per byte; also used by
    :func:`iidschema.crops.crop_runs`."""
    # prev[j]: the byte before byte j, except 0 before each mask's first byte,
    # so that a mask's first pixel "changes" exactly when it is True (the
    # zero-long first run).  t = x XOR (x shifted right by one bit, the low
    # bit of prev entering at the top): bit b of t is set where pixel b
    # differs from pixel b - 1 of the same mask.
    prev = np.empty_like(x)
    if x.size:
        prev[0] = 0
        prev[1:] = x[:-1]
        prev[starts[:-1][pixels > 0]] = 0
    t = prev << _B7
    t |= x >> _B1
    t ^= x
    # The padding bits after a mask are False: a True last pixel would show a
    # transition into the padding there.  The mask's end is a boundary anyway.
    end_bits = starts[:-1] * 8 + pixels
    end_bits = end_bits[(pixels & 7) != 0]
    t[end_bits >> 3] &= ~(_B128 >> (end_bits & 7).astype(np.uint8))
    # (numpy's nonzero has a fast path for bool arrays only; unpackbits
    # yields 0/1 bytes, so viewing them as bool is exact.)
    nz = (t != 0).nonzero()[0]
    bits = np.unpackbits(t[nz]).view(np.bool_).nonzero()[0]
    return nz[bits >> 3] * 8 + (bits & 7)


def _runs_chunk(x: np.ndarray, starts: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive masks packed in ``x`` (their ``starts`` relative to
    it); returns the runs and the number of runs of each mask."""
    count = pixels.size
    changes = transitions(x, starts, pixels)
    # Boundaries of mask i: its first bit s_i, its changes, its end s_i + n_i;
    # laid out in one array with the changes of mask i at their own index
    # plus 2i + 1, the mask's start just before and its end just after.
    bit_starts = starts * 8
    first_change = np.searchsorted(changes, bit_starts)
    per_mask = first_change[1:] - first_change[:-1]
    slot = first_change[:-1] + 2 * np.arange(count, dtype=np.int64)
    bounds = np.empty(changes.size + 2 * count, dtype=np.int64)
    bounds[slot] = bit_starts[:-1]
    bounds[slot + per_mask + 1] = bit_starts[:-1] + pixels
    keep = np.ones(bounds.size, dtype=np.bool_)
    keep[slot] = False
    keep[slot + per_mask + 1] = False
    bounds[keep] = changes
    diffs = bounds[1:] - bounds[:-1]
    # Mask i owns the differences slot_i .. slot_i + per_mask_i (one more
    # run than transitions) unless it is empty (no runs at all); the
    # difference from one mask's end to the next mask's start is dropped.
    keep = np.ones(diffs.size, dtype=np.bool_)
    keep[(slot + per_mask + 1)[:-1]] = False
    empty = pixels == 0
    keep[slot[empty]] = False
    per_mask += 1
    per_mask[empty] = 0
    return diffs[keep], per_mask


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of the unsigned LEB128 varint of each non-negative int64 (int64)."""
    v = np.asarray(values, dtype=np.int64)
    sizes = np.ones(v.size, dtype=np.int64)
    if v.size:
        top = int(v.max())
        limit = 0x80
        while top >= limit:
            sizes += v >= limit
            limit <<= 7
    return sizes


def encode_varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of non-negative int64 ``values``, concatenated."""
    v = np.asarray(values, dtype=np.int64)
    n = v.size
    if n == 0:
        return b""
    if v[v.argmin()] < 0:
        raise ValueError("varints encode non-negative values only")
    top = int(v[v.argmax()])
    if top <= 0x7F:  # one byte per value: the common case for small masks
        return v.astype(np.uint8).tobytes()
    k = (top.bit_length() + 6) // 7
    # Column j of ``out`` holds group j of every value, with the continuation
    # bit when a group follows; ``keep`` marks the groups a value really has.
    # Row-major boolean indexing then yields the bytes in file order.
    out = np.empty((n, k), dtype=np.uint8)
    keep = np.empty((n, k), dtype=np.bool_)
    keep[:, 0] = True
    rest = v
    for j in range(k - 1):
        more = rest > _I127
        keep[:, j + 1] = more
        # The low byte of ``rest``; its bit 7 is then forced on exactly when a
        # group follows (when none does, rest <= 0x7f and bit 7 is already 0).
        group = rest.astype(np.uint8)
        group |= more.view(np.uint8) << _B7
        out[:, j] = group
        rest = rest >> _I7
    out[:, k - 1] = rest
    return out[keep].tobytes()


def _decode_runs(buffer: bytes | memoryview) -> tuple[np.ndarray, int]:
    """Run lengths from an ``rle`` payload, with every per-varint check.

    Checks: no truncated varint, none longer than 9 bytes, all canonical, and
    no zero-long run but the first.  Memory is O(len(buffer)) whatever the
    values claim.  Returns the values (uint8 when all varints are one byte,
    else intp/int64) and a bound on the varint length in bytes (values are
    below ``2**(7*that)``).
    """
    buf = np.frombuffer(buffer, dtype=np.uint8)
    size = buf.size
    if size == 0:
        return buf, 0
    ends = (buf < _B128).nonzero()[0]  # the last byte of each varint
    count = ends.size
    if count == size:  # all one-byte varints: the values are the bytes
        if np.count_nonzero(buf[1:]) != size - 1:
            raise IIDCodecError("rle payload holds a zero-length run after the first")
        return buf, 1
    if count == 0 or ends[-1] != size - 1:
        raise IIDCodecError("rle payload ends inside a varint (truncated)")
    # Work on the bytes as intp: gathers and table look-ups are cheapest so.
    x = buf.astype(np.intp)
    # The most significant group (last byte) of each varint.  It is 0 only
    # for a one-byte zero, which is only allowed as the first run (and the
    # first varint is one byte iff it ends at 0); a zero last byte after
    # continuation bytes is a non-canonical varint.
    values = x[ends]
    zeros = count - np.count_nonzero(values)
    if zeros and (zeros > 1 or values[0] != 0 or ends[0] != 0):
        raise IIDCodecError("rle payload holds a zero-length run after the first, or a non-canonical varint")
    # Fast path, varints of at most two bytes (runs below 16384): the byte
    # before each last byte is a continuation byte iff the varint has two
    # bytes (for the first varint, index -1 wraps to the final byte, which is
    # never one).  If there are as many such bytes as continuation bytes in
    # all, none is longer; then value = top * 128 + (prev - 128) for those,
    # by table look-up on ``prev`` (multiplier 1 and addend 0 otherwise).
    prev = x[ends - _I1]
    if np.count_nonzero(prev >= _P128) == size - count:
        values *= _MUL2[prev]
        values += _ADD2[prev]
        return values, 2
    lens = np.empty(count, dtype=np.intp)
    lens[0] = ends[0] + 1
    np.subtract(ends[1:], ends[:-1], out=lens[1:])
    k = int(lens[lens.argmax()])
    if k > MAX_VARINT_BYTES:
        raise IIDCodecError(f"rle payload holds a varint of {k} bytes (at most {MAX_VARINT_BYTES} allowed)")
    # Horner's rule from the most significant group down; values shorter
    # than j+1 bytes are left alone.  ``ends - j`` is never out of range
    # where it is used (those values start at or before it).
    x = x.astype(np.int64, copy=False) & _I127
    values = values.astype(np.int64, copy=False)
    for j in range(1, k):
        np.bitwise_or(values << _I7, x[ends - j], out=values, where=lens > j)
    return values, k


def decode_varints(buffer: bytes | memoryview) -> np.ndarray:
    """Values (int64) of an ``rle`` payload: concatenated canonical varints.

    Strict: raises :class:`IIDCodecError` on a truncated, overlong or
    non-canonical varint, and on a zero value anywhere but first (the
    ``rle`` run rule).
    """
    return _decode_runs(buffer)[0].astype(np.int64, copy=False)


def rle_encode(mask: np.ndarray) -> bytes:
    """Encode a mask in the ``rle`` byte format."""
    m = mask if type(mask) is np.ndarray and mask.dtype == np.bool_ and mask.ndim == 2 else as_mask(mask)
    runs = runs_of(m)
    # One byte per run when no run exceeds 127 (always so for masks of at
    # most 127 pixels): skip encode_varints' general path.
    if m.size <= 0x7F or int(runs[runs.argmax()]) <= 0x7F:
        return runs.astype(np.uint8).tobytes()
    return encode_varints(runs)


def rle_decode(buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
    """Decode the ``rle`` byte format into a ``shape`` bool array (bounded).

    The run total is checked against ``h*w`` before the output is allocated,
    so a tiny payload claiming 2**60 pixels costs nothing.
    """
    h, w = check_shape(shape)
    n = h * w
    buf = np.frombuffer(buffer, dtype=np.uint8)
    size = buf.size
    if n and 0 < size <= _ALTERNATING.size and buf[buf.argmax()] < _B128:
        # Fast path, every varint one byte (runs below 128): the values are
        # the bytes; only the first may be 0.
        if np.count_nonzero(buf[1:]) != size - 1:
            raise IIDCodecError("rle payload holds a zero-length run after the first")
        total = int(buf.sum(dtype=np.int64))
        if total != n:
            raise IIDCodecError(f"rle payload decodes to {total} pixels, the {h}x{w} mask has {n}")
        return np.repeat(_ALTERNATING[:size], buf).reshape(h, w)
    runs, k = _decode_runs(buffer)
    count = runs.size
    if not count or not n:
        if count or n:
            raise IIDCodecError(f"rle payload holds {count} runs but the mask is {h}x{w}")
        return np.zeros((h, w), dtype=np.bool_)
    # Each value is below 2**(7*k): the numpy sum is exact unless ``count``
    # such values could overflow int64 (absurd payloads only), when Python
    # ints take over.
    if 7 * k + count.bit_length() < 63:
        total = int(runs.sum(dtype=np.int64))
    else:
        total = sum(int(r) for r in runs)
    if total != n:
        raise IIDCodecError(f"rle payload decodes to {total} pixels, the {h}x{w} mask has {n}")
    alternating = _ALTERNATING[:count] if count <= _ALTERNATING.size else _alternating(count)
    return np.repeat(alternating, runs).reshape(h, w)


def select_runs(runs: np.ndarray, offsets: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs and offsets of masks ``which`` only (same layout as the input)."""
    which = np.asarray(which, dtype=np.int64)
    counts = offsets[which + 1] - offsets[which]
    sel_offsets = np.zeros(which.size + 1, dtype=np.int64)
    np.cumsum(counts, out=sel_offsets[1:])
    # index of run r of the selection: offsets[which[i]] + (r - sel_offsets[i])
    shift = np.repeat(offsets[which] - sel_offsets[:-1], counts)
    shift += np.arange(shift.size, dtype=np.int64)
    return runs[shift], sel_offsets


def rle_payloads(runs: np.ndarray, offsets: np.ndarray, which: np.ndarray | None = None) -> list[bytes]:
    """The ``rle`` payloads of masks given by their runs (:func:`runs_of_packed`).

    All varints are encoded with one :func:`encode_varints` call and cut at
    the masks' byte offsets; ``which`` selects masks (default: all).
    """
    if which is not None:
        runs, offsets = select_runs(runs, offsets, which)
    sizes = varint_sizes(runs)
    data = _encode_varints_sized(runs, sizes)
    ends = np.zeros(runs.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=ends[1:])
    bounds = ends[offsets].tolist()
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _encode_varints_sized(values: np.ndarray, sizes: np.ndarray) -> bytes:
    """:func:`encode_varints` of non-negative ``values`` whose varint sizes
    are known: byte ``j`` of every value longer than ``j`` bytes is scattered
    to its place, one array operation per byte position (at most 9)."""
    total = int(sizes.sum())
    if total == values.size:  # all one byte
        return values.astype(np.uint8).tobytes()
    out = np.empty(total, dtype=np.uint8)
    pos = np.cumsum(sizes) - sizes  # first byte of each varint
    longer = sizes > 1
    out[pos] = (values & _I127).astype(np.uint8) | (longer.view(np.uint8) << _B7)
    j = 1
    while True:
        sel = np.flatnonzero(sizes > j)
        if not sel.size:
            break
        v, s = values[sel] >> (7 * j), sizes[sel]
        out[pos[sel] + j] = (v & _I127).astype(np.uint8) | ((s > j + 1).view(np.uint8) << _B7)
        j += 1
    return out.tobytes()


def rle_sizes(runs: np.ndarray, offsets: np.ndarray, vsizes: np.ndarray | None = None) -> np.ndarray:
    """Exact byte size of each mask's ``rle`` payload, without encoding it
    (``vsizes``: :func:`varint_sizes` of ``runs``, when already known)."""
    ends = np.zeros(runs.size + 1, dtype=np.int64)
    np.cumsum(varint_sizes(runs) if vsizes is None else vsizes, out=ends[1:])
    return ends[offsets[1:]] - ends[offsets[:-1]]


class RunBatch:
    """The runs of many masks (:func:`runs_of_packed`) with what the bulk
    encoders derive from them, computed once: the varint sizes, each mask's
    ``rle`` size, and all masks' ``rle`` bytes (encoding every mask's runs in
    one pass and slicing costs less than gathering the runs of the masks
    that chose ``rle``)."""

    __slots__ = ("runs", "offsets", "_vsizes", "_sizes", "_data", "_bounds")

    def __init__(self, runs: np.ndarray, offsets: np.ndarray):
        self.runs = runs
        self.offsets = offsets
        self._vsizes: np.ndarray | None = None
        self._sizes: np.ndarray | None = None
        self._data: bytes | None = None
        self._bounds: list[int] | None = None

    @classmethod
    def of(cls, pm: PackedMasks) -> "RunBatch":
        return cls(*runs_of_packed(pm))

    def _varint_sizes(self) -> np.ndarray:
        if self._vsizes is None:
            self._vsizes = varint_sizes(self.runs)
        return self._vsizes

    def sizes(self) -> np.ndarray:
        """Byte size of each mask's ``rle`` payload."""
        if self._sizes is None:
            self._sizes = rle_sizes(self.runs, self.offsets, self._varint_sizes())
        return self._sizes

    def payloads(self, which: np.ndarray | None = None) -> list[bytes]:
        """The ``rle`` payloads of masks ``which`` (default: all)."""
        if self._data is None:
            vsizes = self._varint_sizes()
            self._data = _encode_varints_sized(self.runs, vsizes)
            ends = np.zeros(self.runs.size + 1, dtype=np.int64)
            np.cumsum(vsizes, out=ends[1:])
            self._bounds = ends[self.offsets].tolist()
        data, bounds = self._data, self._bounds
        assert bounds is not None
        if which is None:
            return [data[a:b] for a, b in zip(bounds, bounds[1:])]
        return [data[bounds[i] : bounds[i + 1]] for i in np.asarray(which, dtype=np.int64).tolist()]


def rle_encode_many(masks: Sequence[Any] | PackedMasks) -> list[bytes]:
    """``[rle_encode(m) for m in masks]`` with a fixed number of numpy calls
    per chunk of masks instead of per mask."""
    pm = masks if isinstance(masks, PackedMasks) else pack_masks(masks)
    return rle_payloads(*runs_of_packed(pm))


def rle_decode_many(buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """``[rle_decode(b, s) for b, s in zip(buffers, shapes)]``, in one pass
    (:func:`rle_decode_flat`); the masks are views of one array."""
    dims = check_shapes(shapes, len(buffers))
    if not dims:
        return []
    lengths = np.fromiter((len(b) if type(b) is bytes else memoryview(b).nbytes for b in buffers), dtype=np.int64, count=len(dims))
    flat, starts = rle_decode_flat(b"".join(buffers), lengths, dims)
    if flat is None:  # absurd payloads: exact, one by one
        return [rle_decode(b, d) for b, d in zip(buffers, dims)]
    return [flat[s : s + h * w].reshape(h, w) for (h, w), s in zip(dims, starts.tolist())]


def rle_decode_flat(
    joined: bytes | memoryview | np.ndarray, lengths: np.ndarray, dims: Sequence[tuple[int, int]] | np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """Decode the ``rle`` payloads concatenated in ``joined`` (payload ``i``
    is ``lengths[i]`` bytes, of a mask of shape ``dims[i]``) into one flat
    bool array: mask ``i`` is ``flat[starts[i] : starts[i] + h*w]``.

    The buffers are parsed together, with the checks of :func:`rle_decode`
    applied per buffer (no varint may run into the next buffer; a zero run
    only first in its buffer; each buffer's runs add up to its ``h*w``), all
    before the output is allocated.  Raises :class:`IIDCodecError` naming
    the first bad buffer.  Returns ``(None, starts)`` when the sums could
    overflow int64 (absurd payloads only): decode those one by one.
    """
    count = len(dims)
    bstart = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=bstart[1:])
    if isinstance(dims, np.ndarray):  # (count, 2): no Python tuple per payload
        npix = dims[:, 0].astype(np.int64) * dims[:, 1] if count else np.zeros(0, np.int64)
    else:
        npix = np.array([h * w for h, w in dims], dtype=np.int64) if count else np.zeros(0, np.int64)
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(npix, out=starts[1:])
    starts = starts[:-1]

    def bad(index: int, why: str) -> IIDCodecError:
        h, w = dims[index]
        return IIDCodecError(f"rle payload {index} (a {h}x{w} mask): {why}")

    buf = np.frombuffer(joined, dtype=np.uint8)
    nonempty = lengths > 0
    last_bytes = buf[bstart[1:][nonempty] - 1]
    if last_bytes.size and last_bytes.max() >= 0x80:
        first = int(np.flatnonzero(nonempty)[np.argmax(last_bytes >= 0x80)])
        raise bad(first, "ends inside a varint (truncated)")
    ends = (buf < _B128).nonzero()[0]  # the last byte of each varint
    nvar = ends.size
    vlen = np.empty(nvar, dtype=np.int64)
    if nvar:
        vlen[0] = ends[0] + 1
        np.subtract(ends[1:], ends[:-1], out=vlen[1:])
    owner_first = np.searchsorted(ends, bstart)  # first varint of each buffer
    per_buffer = np.diff(owner_first)

    def owner(varint: int) -> int:  # the buffer holding a varint (for errors)
        return int(np.searchsorted(owner_first, varint, side="right")) - 1

    k = int(vlen.max()) if nvar else 0
    if k > MAX_VARINT_BYTES:
        raise bad(owner(int(np.argmax(vlen > MAX_VARINT_BYTES))), f"holds a varint of more than {MAX_VARINT_BYTES} bytes")
    values = (buf[ends] & _B127).astype(np.int64)
    for j in range(1, k):
        longer = np.flatnonzero(vlen > j)  # few: most runs fit in one byte
        values[longer] = (values[longer] << _I7) | (buf[ends[longer] - j] & _B127)
    # Zero last byte: a zero run (one byte), or a non-canonical varint.
    zero = buf[ends] == 0
    if zero.any():
        is_first = np.zeros(nvar, dtype=np.bool_)
        is_first[owner_first[:-1][per_buffer > 0]] = True
        wrong = zero & ((vlen > 1) | ~is_first)
        if wrong.any():
            raise bad(owner(int(np.argmax(wrong))), "holds a zero-length run after the first, or a non-canonical varint")
    if 7 * k + nvar.bit_length() >= 63:
        return None, starts
    totals = np.zeros(nvar + 1, dtype=np.int64)
    np.cumsum(values, out=totals[1:])
    sums = totals[owner_first[1:]] - totals[owner_first[:-1]]
    wrong = (sums != npix) | ((per_buffer > 0) != (npix > 0))
    if wrong.any():
        i = int(np.argmax(wrong))
        raise bad(i, f"holds {int(per_buffer[i])} runs adding up to {int(sums[i])} pixels, the mask has {int(npix[i])}")
    parity = np.arange(nvar, dtype=np.int64)
    parity -= np.repeat(owner_first[:-1], per_buffer)
    return np.repeat((parity & 1).astype(np.bool_), values), starts


class RLECodec(MaskCodec):
    """Run lengths of the row-major mask as LEB128 varints (small for blobs)."""

    id = 1
    name = "rle"
    description = "row-major run lengths (False first) as unsigned LEB128 varints"

    def encode(self, mask: np.ndarray) -> bytes:
        return rle_encode(mask)

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        return rle_decode(buffer, shape)

    def encode_many(self, masks: Sequence[Any]) -> list[bytes]:
        """``[encode(m) for m in masks]``, vectorised across masks."""
        if type(self).encode is not RLECodec.encode:  # a subclass encoding differently
            return super().encode_many(masks)
        return rle_encode_many(masks)

    def decode_many(self, buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """``[decode(b, s) for b, s in zip(buffers, shapes)]``, same checks, one pass."""
        if type(self).decode is not RLECodec.decode:
            return super().decode_many(buffers, shapes)
        return rle_decode_many(buffers, shapes)
