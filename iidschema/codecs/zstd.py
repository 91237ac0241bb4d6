"""Codec 2, ``zstd``: the packbits payload compressed as one Zstandard frame.

Byte format: exactly one zstd frame (RFC 8878) whose *frame content size*
field is present and equals ``ceil(h*w/8)``, and which decompresses to the
``packbits`` payload of the mask (codec 0).  No dictionary, nothing after
the frame.  The encoder uses compression level 3 by default.

Decoding is bounded by reading the frame header first: a frame that does not
declare its content size, or declares another one than the region allows,
is refused *before* anything is decompressed.  The block headers are then
walked (as ``ZSTD_decompressBound`` does) to check that the blocks can
produce that many bytes at all: zstandard allocates the declared size up
front, so without this a 20-byte frame claiming the 512 MB of a 65535x65535
region would allocate 512 MB before failing.

This module imports :mod:`zstandard`; the built-in plugin declares it lazily
so that merely listing codecs never imports it.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np
import zstandard

from ..errors import IIDCodecError
from .base import MaskCodec, check_shape, packed_size
from .packbits import PackedMasks, check_shapes, pack, pack_masks, unpack

__all__ = ["ZstdCodec", "DEFAULT_LEVEL", "MIN_FRAME_BYTES"]

DEFAULT_LEVEL = 3

#: No zstd payload of a mask with pixels is shorter: magic (4) + frame
#: header descriptor (1) + the smallest content size field (1) + one block
#: header (3) + at least one byte of block content (an RLE block's byte).
#: ``codec="auto"`` skips compressing where another codec is already this
#: small, because zstd cannot win there.
MIN_FRAME_BYTES = 10

_MAGIC = b"\x28\xb5\x2f\xfd"
#: A block never regenerates more than this (RFC 8878, Block_Maximum_Size).
_BLOCK_MAX = 128 * 1024


def _content_bound(buf: memoryview, start: int) -> int:
    """Most bytes the blocks from ``start`` can produce; checks their framing.

    Raw and RLE blocks produce exactly their Block_Size, a compressed block
    at most 128 KiB.  Each block takes at least 3 input bytes, so this loop
    is bounded by the payload size.
    """
    n = len(buf)
    pos = start
    total = 0
    while True:
        if pos + 3 > n:
            raise IIDCodecError("zstd frame is truncated (missing block header)")
        header = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        pos += 3
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            raise IIDCodecError("zstd frame holds a block of reserved type 3")
        if size > _BLOCK_MAX:
            raise IIDCodecError(f"zstd frame holds a block of {size} bytes (at most {_BLOCK_MAX})")
        if kind == 0:  # raw
            total += size
            pos += size
        elif kind == 1:  # RLE: one byte repeated ``size`` times
            total += size
            pos += 1
        else:  # compressed
            total += _BLOCK_MAX
            pos += size
        if pos > n:
            raise IIDCodecError("zstd frame is truncated (block data)")
        if last:
            return total


class ZstdCodec(MaskCodec):
    """Zstandard-compressed packbits; small for large, simple masks.

    :param level: zstd compression level used by :meth:`encode` (decoding
        does not depend on it).
    :param threads: threads :meth:`encode_many` compresses with (zstandard's
        ``multi_compress_to_buffer``; -1: one per CPU, 0: the calling thread
        only).  The frames are the same whatever it is.
    """

    id = 2
    name = "zstd"
    description = "packbits compressed as one Zstandard frame with its content size (level 3)"

    def __init__(self, level: int = DEFAULT_LEVEL, threads: int = -1):
        self.level = int(level)
        self.threads = int(threads)
        # zstandard's (de)compressor objects are not safe to share between
        # threads, and creating one costs more than compressing a small mask:
        # keep one of each per thread.
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "compressor", None)
        if c is None:
            c = self._local.compressor = zstandard.ZstdCompressor(
                level=self.level, write_content_size=True, write_checksum=False, write_dict_id=False
            )
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "decompressor", None)
        if d is None:
            d = self._local.decompressor = zstandard.ZstdDecompressor()
        return d

    def encode(self, mask: np.ndarray) -> bytes:
        return self._compressor().compress(pack(mask))

    def compress_many(self, payloads: Sequence[bytes]) -> list[bytes]:
        """``[compressor.compress(p) for p in payloads]`` in one call into
        zstandard (``multi_compress_to_buffer``: the same frames, without a
        Python round trip per payload)."""
        if not payloads:
            return []
        compressor = self._compressor()
        # multi_compress_to_buffer refuses empty sources (empty masks): those
        # are compressed one by one.
        full = [i for i, p in enumerate(payloads) if len(p)]
        if len(full) < len(payloads):
            out = [compressor.compress(b"")] * len(payloads)
            for i, frame in zip(full, self.compress_many([payloads[i] for i in full])):
                out[i] = frame
            return out
        # Small batches are not worth waking threads for.
        threads = self.threads if len(payloads) >= 256 else 0
        frames = compressor.multi_compress_to_buffer(list(payloads), threads=threads)
        return [bytes(f) for f in frames]

    def compress_spans(self, spans: Sequence[tuple[Any, np.ndarray, np.ndarray]], threads: int | None = None) -> Any:
        """The frames of the payloads ``data[s : s + n]`` of every ``(data,
        starts, sizes)`` in ``spans``, in that order, as
        :meth:`compress_many` makes them, without a bytes object per
        payload (zstandard reads them in place).  Returns a sequence of
        frames (``len()`` and ``bytes()`` of each).  Payloads must not be
        empty.  ``threads`` overrides :attr:`threads`."""
        buffers = []
        total = 0
        for data, starts, sizes in spans:
            if len(starts):
                segments = np.empty((len(starts), 2), dtype=np.uint64)
                segments[:, 0] = starts
                segments[:, 1] = sizes
                buffers.append(zstandard.BufferWithSegments(data, segments.tobytes()))
                total += len(starts)
        if not total:
            return []
        threads = (self.threads if threads is None else threads) if total >= 256 else 0
        return self._compressor().multi_compress_to_buffer(zstandard.BufferWithSegmentsCollection(*buffers), threads=threads)

    def encode_many(self, masks: Sequence[Any] | PackedMasks) -> list[bytes]:
        """``[encode(m) for m in masks]``: one packing pass, one compression call."""
        if type(self).encode is not ZstdCodec.encode:  # a subclass encoding differently
            return super().encode_many(masks)
        pm = masks if isinstance(masks, PackedMasks) else pack_masks(masks)
        return self.compress_many(pm.payloads())

    def decode_many(self, buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """``[decode(b, s) for b, s in zip(buffers, shapes)]`` (each frame is
        checked on its own before it is decompressed)."""
        dims = check_shapes(shapes, len(buffers))
        return [self.decode(b, d) for b, d in zip(buffers, dims)]

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        h, w = check_shape(shape)
        return unpack(self.decompress(buffer, packed_size(h * w), (h, w)), (h, w), codec=self.name)

    def decompress(self, buffer: bytes | memoryview, expected: int, shape: tuple[int, int]) -> bytes:
        """The packbits payload in ``buffer``'s frame, which must declare
        exactly ``expected`` bytes (checked before anything is decompressed).
        ``shape`` is only for the error messages."""
        h, w = shape
        try:
            params = zstandard.get_frame_parameters(buffer)
        except zstandard.ZstdError as exc:
            raise IIDCodecError(f"zstd payload has no valid frame header: {exc}") from None
        size = params.content_size
        if size == zstandard.CONTENTSIZE_UNKNOWN:
            raise IIDCodecError("zstd frame does not declare its content size")
        if size != expected:
            raise IIDCodecError(
                f"zstd frame declares {size} bytes of content; a {h}x{w} mask needs exactly {expected}"
            )
        if params.dict_id:
            raise IIDCodecError(f"zstd frame needs dictionary {params.dict_id}; iidschema uses none")
        view = memoryview(buffer).cast("B")
        if view[:4] != _MAGIC:  # e.g. a skippable frame
            raise IIDCodecError("zstd payload is not a zstd data frame")
        try:
            start = zstandard.frame_header_size(buffer)
        except zstandard.ZstdError as exc:
            raise IIDCodecError(f"zstd payload has no valid frame header: {exc}") from None
        bound = _content_bound(view, start)
        if bound < expected:
            raise IIDCodecError(
                f"zstd frame declares {expected} bytes of content but its blocks can hold at most {bound}"
            )
        # The declared size is now known to be ``expected``: zstandard sizes
        # its output from it (max_output_size only matters for frames without
        # one, which were refused above), and a frame whose blocks hold more
        # than it declares fails instead of growing the output.
        try:
            data = self._decompressor().decompress(buffer, max_output_size=expected, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise IIDCodecError(f"zstd payload is damaged: {exc}") from None
        if len(data) != expected:
            raise IIDCodecError(f"zstd payload decompressed to {len(data)} bytes, expected {expected}")
        return data

    def __repr__(self) -> str:
        return f"<ZstdCodec codec 'zstd' id=2 level={self.level}>"
