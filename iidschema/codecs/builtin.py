"""The built-in codecs, registered as an ordinary plugin.

This module is what the entry point ``builtin_codecs`` (group ``iidschema``)
names, exactly like a third-party codec package would: the built-ins get no
special path into the registry, so the plugin mechanism is exercised by every
user.  Its hook returns lazy declarations only; ``packbits``, ``rle`` and
``zstd`` (which imports :mod:`zstandard`) are imported on first use.
"""

from __future__ import annotations

from ..plugins.hookspecs import hookimpl
from .base import CodecSpec

__all__ = ["BUILTIN_CODECS", "iidschema_codecs"]

BUILTIN_CODECS: tuple[CodecSpec, ...] = (
    CodecSpec(
        0,
        "packbits",
        "iidschema.codecs.packbits:PackBitsCodec",
        "1 bit per pixel, row-major, MSB first (np.packbits); the version-0 payload",
    ),
    CodecSpec(
        1,
        "rle",
        "iidschema.codecs.rle:RLECodec",
        "row-major run lengths (False first) as unsigned LEB128 varints",
    ),
    CodecSpec(
        2,
        "zstd",
        "iidschema.codecs.zstd:ZstdCodec",
        "packbits compressed as one Zstandard frame with its content size (level 3)",
    ),
)


@hookimpl
def iidschema_codecs() -> list[CodecSpec]:
    """Declare packbits (0), rle (1) and zstd (2)."""
    return list(BUILTIN_CODECS)
