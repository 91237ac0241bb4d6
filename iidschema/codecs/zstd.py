"""Codec 2, ``zstd``: the packbits payload compressed as one Zstandard frame.

Byte format: exactly one zstd frame (RFC 8878) whose *frame content size*
field is present and equals ``ceil(h*w/8)``, and which decompresses to the
``packbits`` payload of the mask (codec 0).  No dictionary, nothing after
the frame.  The encoder uses compression level 3 by default.

Decoding is bounded by reading the frame header first: a frame that does not
declare its content size, or declares another one than the region allows,
is refused *before* anything is decompressed, and the decompressor is told
the exact output size, so a small damaged payload can never make it allocate
more than the region's ``ceil(h*w/8)`` bytes.

This module imports :mod:`zstandard`; the built-in plugin declares it lazily
so that merely listing codecs never imports it.
"""

from __future__ import annotations

import threading

import numpy as np
import zstandard

from ..errors import IIDCodecError
from .base import MaskCodec, check_shape, packed_size
from .packbits import pack, unpack

__all__ = ["ZstdCodec", "DEFAULT_LEVEL"]

DEFAULT_LEVEL = 3


class ZstdCodec(MaskCodec):
    """Zstandard-compressed packbits; small for large, simple masks.

    :param level: zstd compression level used by :meth:`encode` (decoding
        does not depend on it).
    """

    id = 2
    name = "zstd"
    description = "packbits compressed as one Zstandard frame with its content size (level 3)"

    def __init__(self, level: int = DEFAULT_LEVEL):
        self.level = int(level)
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

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        h, w = check_shape(shape)
        expected = packed_size(h * w)
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
        return unpack(data, (h, w), codec=self.name)

    def __repr__(self) -> str:
        return f"<ZstdCodec codec 'zstd' id=2 level={self.level}>"
