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

import numpy as np

from ..errors import IIDCodecError
from .base import MaskCodec, as_mask, check_shape

__all__ = ["RLECodec", "MAX_VARINT_BYTES", "runs_of", "encode_varints", "decode_varints", "rle_encode", "rle_decode"]

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
    m = as_mask(mask)
    n = m.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # Pad the flattened mask with False in front and the negation of its last
    # pixel behind: the changes of the padded sequence are then exactly the
    # run boundaries 0 (only when pixel 0 is True, giving the zero-long first
    # run) .. n (always), and the runs are their successive differences.
    padded = np.empty(n + 2, dtype=np.bool_)
    padded[0] = False
    padded[1:-1].reshape(m.shape)[...] = m
    padded[-1] = not padded[-2]
    bounds = (padded[1:] != padded[:-1]).nonzero()[0]
    runs = np.empty(bounds.size, dtype=np.int64)
    runs[0] = bounds[0]
    np.subtract(bounds[1:], bounds[:-1], out=runs[1:])
    return runs


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
    return encode_varints(runs_of(mask))


def rle_decode(buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
    """Decode the ``rle`` byte format into a ``shape`` bool array (bounded).

    The run total is checked against ``h*w`` before the output is allocated,
    so a tiny payload claiming 2**60 pixels costs nothing.
    """
    h, w = check_shape(shape)
    n = h * w
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


class RLECodec(MaskCodec):
    """Run lengths of the row-major mask as LEB128 varints (small for blobs)."""

    id = 1
    name = "rle"
    description = "row-major run lengths (False first) as unsigned LEB128 varints"

    def encode(self, mask: np.ndarray) -> bytes:
        return rle_encode(mask)

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        return rle_decode(buffer, shape)
