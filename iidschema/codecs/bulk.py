"""Decode many region payloads of one codec at once, into one flat buffer.

Reading every segment of a file one region at a time costs a few numpy
calls per region, which dominates at hundreds of thousands of regions.
:func:`decode_flat` decodes a whole list of payloads of one codec with a
constant number of numpy calls (for the built-in codecs), producing one
1-D ``bool`` array that holds every region's pixels back to back, and the
start of each region in it.  Readers then hand out views into that array
(:mod:`iidschema.bulk`).

The byte formats are the codecs' own (``packbits``, ``rle``, ``zstd``, see
``docs/CODECS.md``); only the loop over regions is moved into numpy, and
every check the single-region decoders make is made here too, so a payload
that one of them refuses is refused here (always as
:class:`~iidschema.errors.IIDCodecError`).  ``zstd`` frames are checked and
decompressed one by one (in zstandard's C code) and unpacked together.
Codecs without a bulk path (third-party ones) go through their own
``decode``.

Nothing here bounds the *total* output: callers decide which regions are
worth decoding eagerly (see :mod:`iidschema.bulk`); each region is bounded by
its shape as usual.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import IIDCodecError
from ..masks import exclusive_cumsum
from .base import packed_size
from .packbits import PackBitsCodec
from .rle import RLECodec, rle_decode_flat

__all__ = ["decode_flat", "join_payloads"]


def join_payloads(raw: Any, offsets: np.ndarray, lengths: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """The payload bytes ``raw[o:o+n]`` of every (o, n), concatenated, as a
    ``uint8`` array.

    Numpy gathers with an index of every byte (built with one ``np.repeat``),
    for about ``chunk`` bytes at a time (the index takes 8 bytes per byte): at
    tens of thousands of payloads of a few dozen bytes, half the time of a
    ``bytes.join`` over memoryview slices (a Python object per payload).
    """
    u8 = np.frombuffer(raw, dtype=np.uint8)
    starts = exclusive_cumsum(lengths)
    out = np.empty(int(starts[-1]), dtype=np.uint8)
    cuts = np.searchsorted(starts, np.arange(chunk, out.size, chunk), side="right") - 1
    bounds = [0, *np.unique(cuts[cuts > 0]).tolist(), lengths.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo, hi = int(starts[a]), int(starts[b])
        index = np.arange(lo, hi, dtype=np.int64)
        index += np.repeat(offsets[a:b] - starts[a:b], lengths[a:b])
        out[lo:hi] = u8[index]
    return out


def decode_flat(
    codec: Any, raw: Any, offsets: np.ndarray, lengths: np.ndarray, heights: np.ndarray, widths: np.ndarray,
    tight: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the payloads ``raw[offsets[i] : offsets[i] + lengths[i]]`` of
    ``codec`` into the masks of shapes ``(heights[i], widths[i])``.

    Returns ``(bits, starts)``: region ``i`` is
    ``bits[starts[i] : starts[i] + h*w].reshape(h, w)``.  With ``tight``,
    ``bits`` holds little else (for callers that keep it: packbits may
    otherwise unpack the bytes between payloads too, when that is faster).
    Raises
    :class:`IIDCodecError` if any payload is malformed (without saying which:
    callers that need that decode the regions one by one).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    pixels = np.asarray(heights, dtype=np.int64) * np.asarray(widths, dtype=np.int64)
    # Only the built-in decoders take the vectorised paths: a plugin may
    # register its own codec object under any id, or subclass and override.
    if isinstance(codec, PackBitsCodec) and type(codec).decode is PackBitsCodec.decode:
        return _packbits_flat(raw, offsets, lengths, pixels, tight)
    if isinstance(codec, RLECodec) and type(codec).decode is RLECodec.decode:
        return _rle_flat(raw, offsets, lengths, np.stack([np.asarray(heights, dtype=np.int64), np.asarray(widths, dtype=np.int64)], axis=1))
    # The zstd module (and zstandard) is loaded only once a zstd codec exists.
    zstd = sys.modules.get(f"{__package__}.zstd")
    if zstd is not None and isinstance(codec, zstd.ZstdCodec) and type(codec).decode is zstd.ZstdCodec.decode:
        return _zstd_flat(codec, raw, offsets, lengths, heights, widths)
    return _generic_flat(codec, raw, offsets, lengths, heights, widths)


def _packbits_flat(raw: Any, offsets: np.ndarray, lengths: np.ndarray, pixels: np.ndarray, tight: bool) -> tuple[np.ndarray, np.ndarray]:
    # Each payload is exactly ceil(h*w/8) bytes (checked), so unpacking the
    # concatenation puts region i at 8 * (bytes before it); its padding bits
    # are simply never looked at, as in the single-region decoder.
    if not np.array_equal(lengths, (pixels + 7) // 8):
        i = int(np.argmax(lengths != (pixels + 7) // 8))
        raise IIDCodecError(f"packbits payload of a {int(pixels[i])}-pixel mask must be {packed_size(int(pixels[i]))} bytes, got {int(lengths[i])}")
    if offsets.size:
        lo, hi = int(offsets.min()), int((offsets + lengths).max())
        # Back to back (version 2's payloads): the span is exactly the
        # payloads, tight or not.
        if (not tight and 2 * int(lengths.sum()) >= hi - lo) or int(lengths.sum()) == hi - lo:
            # Payloads packed closely (version 0 records: 12-byte heads between
            # them): unpack the whole span and skip the heads' bits, rather
            # than copying every payload first.
            span = np.frombuffer(raw, dtype=np.uint8, count=hi - lo, offset=lo)
            return np.unpackbits(span).view(np.bool_), 8 * (offsets - lo)
    joined = join_payloads(raw, offsets, lengths)
    return np.unpackbits(joined).view(np.bool_), 8 * exclusive_cumsum(lengths)[:-1]


def _generic_flat(
    codec: Any, raw: Any, offsets: np.ndarray, lengths: np.ndarray, heights: Any, widths: Any
) -> tuple[np.ndarray, np.ndarray]:
    # One region at a time into the output: never the regions and their
    # concatenation at once.
    hs, ws = np.asarray(heights, dtype=np.int64), np.asarray(widths, dtype=np.int64)
    starts = exclusive_cumsum(hs * ws)
    bits = np.empty(int(starts[-1]), dtype=np.bool_)
    view = memoryview(raw)
    for o, n, h, w, s in zip(offsets.tolist(), lengths.tolist(), hs.tolist(), ws.tolist(), starts.tolist()):
        bits[s : s + h * w] = codec.decode(view[o : o + n], (h, w)).reshape(-1)
    return bits, starts[:-1]


def _zstd_flat(codec: Any, raw: Any, offsets: np.ndarray, lengths: np.ndarray, heights: Any, widths: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each frame checked and decompressed on its own (zstandard's C code),
    then every packbits payload unpacked with one ``np.unpackbits``."""
    hs, ws = np.asarray(heights, dtype=np.int64).tolist(), np.asarray(widths, dtype=np.int64).tolist()
    expected = [packed_size(h * w) for h, w in zip(hs, ws)]
    view = memoryview(raw).cast("B")
    joined = b"".join([codec.decompress(view[o : o + n], e, (h, w))
                       for o, n, e, h, w in zip(offsets.tolist(), lengths.tolist(), expected, hs, ws)])
    return np.unpackbits(np.frombuffer(joined, dtype=np.uint8)).view(np.bool_), 8 * exclusive_cumsum(np.array(expected, dtype=np.int64))[:-1]


def _rle_flat(raw: Any, offsets: np.ndarray, lengths: np.ndarray, dims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ``rle`` payload at once (:func:`~iidschema.codecs.rle.rle_decode_flat`:
    LEB128 over the concatenation, one ``np.repeat`` for all pixels)."""
    flat, starts = rle_decode_flat(join_payloads(raw, offsets, lengths), lengths, dims)
    if flat is None:  # absurd payloads: exact, one by one
        codec = RLECodec()
        return _generic_flat(codec, raw, offsets, lengths, dims[:, 0], dims[:, 1])
    return flat, starts
