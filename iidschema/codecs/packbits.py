"""Codec 0, ``packbits``: one bit per pixel, row-major, MSB first.

This is the version-0 region payload, byte-identical to what ``iidfile``
0.2.0 writes: ``numpy.packbits(mask.ravel())``.  Its size is fixed by the
shape, which makes it the safest codec to decode (the length check alone
bounds the output) and the fastest, at the price of size on large blobs.
"""

from __future__ import annotations

import numpy as np

from ..errors import IIDCodecError
from .base import MaskCodec, as_mask, check_shape, packed_size

__all__ = ["PackBitsCodec", "pack", "unpack"]


def pack(mask: np.ndarray) -> bytes:
    """``np.packbits`` of the row-major flattened mask (last byte zero-padded)."""
    return np.packbits(as_mask(mask).ravel()).tobytes()


def unpack(buffer: bytes | memoryview, shape: tuple[int, int], *, codec: str = "packbits") -> np.ndarray:
    """Inverse of :func:`pack`; the buffer must be exactly ``ceil(h*w/8)`` bytes.

    Padding bits of the last byte are ignored (``iidfile`` writes zeros; being
    lenient there costs nothing and reads any writer's files).
    """
    h, w = check_shape(shape)
    n = h * w
    expected = packed_size(n)
    size = memoryview(buffer).nbytes
    if size != expected:
        raise IIDCodecError(f"{codec} payload of a {h}x{w} mask must be {expected} bytes, got {size}")
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), count=n)
    return bits.view(np.bool_).reshape(h, w)


class PackBitsCodec(MaskCodec):
    """Bit-packed mask; fixed size ``ceil(h*w/8)`` bytes."""

    id = 0
    name = "packbits"
    description = "1 bit per pixel, row-major, MSB first (np.packbits); the version-0 payload"

    def encode(self, mask: np.ndarray) -> bytes:
        return pack(mask)

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        return unpack(buffer, shape)
