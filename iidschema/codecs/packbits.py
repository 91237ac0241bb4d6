"""Codec 0, ``packbits``: one bit per pixel, row-major, MSB first.

This is the version-0 region payload, byte-identical to what ``iidfile``
0.2.0 writes: ``numpy.packbits(mask.ravel())``.  Its size is fixed by the
shape, which makes it the safest codec to decode (the length check alone
bounds the output) and the fastest, at the price of size on large blobs.

Besides the one-mask functions, :func:`pack_masks` packs *many* masks with a
single ``np.packbits`` call (:class:`PackedMasks`): writers hold tens of
thousands of small masks, and numpy's per-call overhead, not the packing,
is what costs there.  The ``rle`` and ``zstd`` bulk encoders start from the
same packed stream.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from ..errors import IIDCodecError
from .base import MaskCodec, as_mask, check_shape

__all__ = ["PackBitsCodec", "PackedMasks", "pack", "unpack", "pack_masks", "unpack_many"]

#: Masks are concatenated (as bool pixels) in chunks of about this many
#: pixels before packing: large enough to amortise numpy's per-call cost,
#: small enough that the temporary stays in cache and never doubles the
#: memory of a big batch.
CHUNK_PIXELS = 1 << 21

_PADS = [bytes(k) for k in range(8)]


def pack(mask: np.ndarray) -> bytes:
    """``np.packbits`` of the row-major flattened mask (last byte zero-padded)."""
    if type(mask) is not np.ndarray or mask.dtype != np.bool_ or mask.ndim != 2:
        mask = as_mask(mask)
    return np.packbits(mask.reshape(-1)).tobytes()


def unpack(buffer: bytes | memoryview, shape: tuple[int, int], *, codec: str = "packbits") -> np.ndarray:
    """Inverse of :func:`pack`; the buffer must be exactly ``ceil(h*w/8)`` bytes.

    Padding bits of the last byte are ignored (``iidfile`` writes zeros; being
    lenient there costs nothing and reads any writer's files).
    """
    h, w = check_shape(shape)
    n = h * w
    expected = (n + 7) >> 3
    size = len(buffer) if type(buffer) is bytes else memoryview(buffer).nbytes
    if size != expected:
        raise IIDCodecError(f"{codec} payload of a {h}x{w} mask must be {expected} bytes, got {size}")
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), count=n)
    return bits.view(np.bool_).reshape(h, w)


class PackedMasks:
    """Many masks packed into one byte stream, each starting on a byte boundary.

    Mask ``i`` is bytes ``starts[i]:starts[i + 1]`` of ``packed``: exactly
    its :func:`pack` payload (zero padding bits included), so payloads are
    slices.  Bit ``8 * starts[i] + j`` is pixel ``j`` of the row-major mask.

    :ivar packed: the stream (uint8).
    :ivar starts: byte offsets, ``len(masks) + 1`` (int64).
    :ivar pixels: ``h * w`` of each mask (int64).
    :ivar heights: ``h`` of each mask (int64).
    :ivar widths: ``w`` of each mask (int64).
    """

    __slots__ = ("packed", "starts", "pixels", "heights", "widths", "_bytes", "_starts")

    def __init__(self, packed: np.ndarray, starts: np.ndarray, heights: np.ndarray, widths: np.ndarray):
        self.packed = packed
        self.starts = starts
        self.heights = heights
        self.widths = widths
        self.pixels = heights * widths
        self._bytes: bytes | None = None
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return self.pixels.size

    @property
    def sizes(self) -> np.ndarray:
        """Byte size of each mask's packbits payload (int64)."""
        return np.diff(self.starts)

    def payload(self, i: int) -> bytes:
        return self.packed[self.starts[i] : self.starts[i + 1]].tobytes()

    def payloads(self, which: Sequence[int] | np.ndarray | None = None) -> list[bytes]:
        """The packbits payloads of masks ``which`` (default: all), as bytes."""
        if self._bytes is None:
            # Slicing bytes is cheaper than slicing arrays; kept for later calls.
            self._bytes = self.packed.tobytes()
            self._starts = self.starts.tolist()
        data, starts = self._bytes, self._starts
        assert starts is not None
        if which is None:
            return [data[a:b] for a, b in zip(starts, starts[1:])]
        return [data[starts[i] : starts[i + 1]] for i in np.asarray(which, dtype=np.int64).tolist()]


def chunk_bounds(starts: np.ndarray, chunk_bytes: int) -> list[int]:
    """Mask indices cutting a packed stream into pieces of about ``chunk_bytes``.

    ``starts`` are the masks' byte offsets (``count + 1``); the result starts
    with 0 and ends with ``count``, and a mask is never cut.
    """
    count = starts.size - 1
    total = int(starts[-1])
    cuts = np.searchsorted(starts, np.arange(chunk_bytes, total, chunk_bytes, dtype=np.int64), side="right") - 1
    cuts = cuts[(cuts > 0) & (cuts < count)]  # ascending
    inner = cuts[np.concatenate(([True], cuts[1:] != cuts[:-1]))].tolist() if cuts.size else []
    return [0, *inner, count] if count else [0]


def pack_masks(masks: Sequence[Any], shapes: np.ndarray | None = None) -> PackedMasks:
    """Pack every mask (any 2-D bool-convertible arrays) into one stream.

    The result's payloads equal ``[pack(m) for m in masks]``.  Masks are
    joined, each padded with zero bytes to a multiple of 8 pixels, chunk by
    chunk, and each chunk is packed with one ``np.packbits`` call.

    :param shapes: ``(count, 2)`` ints, the masks' shapes, when the caller
        knows them *and* every mask is a C-contiguous 2-D bool array (as
        :meth:`IIDFile.add` stores them): saves inspecting each mask.
    """
    count = len(masks)
    if shapes is None:
        arrays = [
            m if type(m) is np.ndarray and m.dtype == np.bool_ and m.ndim == 2 and m.flags.c_contiguous
            else np.ascontiguousarray(as_mask(m))
            for m in masks
        ]
        dims = np.fromiter(itertools.chain.from_iterable([m.shape for m in arrays]), np.int64, 2 * count)
        shapes = dims.reshape(count, 2)
    else:
        arrays = list(masks)
        shapes = np.asarray(shapes, dtype=np.int64).reshape(count, 2)
    heights, widths = shapes[:, 0].copy(), shapes[:, 1].copy()
    pixels = heights * widths
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum((pixels + 7) >> 3, out=starts[1:])
    packed = np.empty(int(starts[-1]), dtype=np.uint8)
    # bytes.join copies numpy buffers with far less per-item overhead than
    # np.concatenate; each mask is followed by its zero padding.
    parts: list[Any] = [b""] * (2 * count)
    parts[0::2] = arrays
    parts[1::2] = map(_PADS.__getitem__, ((-pixels) & 7).tolist())
    cuts = chunk_bounds(starts, CHUNK_PIXELS // 8)
    for a, b in zip(cuts, cuts[1:]):
        joined = b"".join(parts[2 * a : 2 * b])
        if len(joined) != 8 * (starts[b] - starts[a]):
            raise ValueError("pack_masks: the masks do not have the given shapes")
        packed[starts[a] : starts[b]] = np.packbits(np.frombuffer(joined, dtype=np.bool_))
    return PackedMasks(packed, starts, heights, widths)


def check_shapes(shapes: Sequence[Any], count: int) -> list[tuple[int, int]]:
    """:func:`check_shape` of each shape; there must be ``count`` of them."""
    shapes = list(shapes)
    if len(shapes) != count:
        raise IIDCodecError(f"decode_many needs one shape per buffer: {count} buffers, {len(shapes)} shapes")
    return [check_shape(s) for s in shapes]


def unpack_many(
    buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]], *, codec: str = "packbits"
) -> list[np.ndarray]:
    """:func:`unpack` of each buffer, with one ``np.unpackbits`` call for all.

    Every buffer's length is checked against its shape before anything is
    allocated.  The masks are views of one array (each C-contiguous).
    """
    dims = check_shapes(shapes, len(buffers))
    for buf, (h, w) in zip(buffers, dims):
        size = len(buf) if type(buf) is bytes else memoryview(buf).nbytes
        if size != (h * w + 7) >> 3:
            raise IIDCodecError(f"{codec} payload of a {h}x{w} mask must be {(h * w + 7) >> 3} bytes, got {size}")
    if not dims:
        return []
    bits = np.unpackbits(np.frombuffer(b"".join(buffers), dtype=np.uint8)).view(np.bool_)
    out = []
    pos = 0
    for h, w in dims:
        n = h * w
        out.append(bits[pos : pos + n].reshape(h, w))
        pos += (n + 7) & ~7
    return out


class PackBitsCodec(MaskCodec):
    """Bit-packed mask; fixed size ``ceil(h*w/8)`` bytes."""

    id = 0
    name = "packbits"
    description = "1 bit per pixel, row-major, MSB first (np.packbits); the version-0 payload"

    def encode(self, mask: np.ndarray) -> bytes:
        return pack(mask)

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        return unpack(buffer, shape)

    def encode_many(self, masks: Sequence[Any]) -> list[bytes]:
        """``[encode(m) for m in masks]``, packed with one numpy call per chunk."""
        if type(self).encode is not PackBitsCodec.encode:  # a subclass encoding differently
            return super().encode_many(masks)
        return pack_masks(masks).payloads()

    def decode_many(self, buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """``[decode(b, s) for b, s in zip(buffers, shapes)]``, same checks."""
        if type(self).decode is not PackBitsCodec.decode:
            return super().decode_many(buffers, shapes)
        return unpack_many(buffers, shapes)
