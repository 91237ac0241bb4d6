"""Byte sources: where a reader gets its bytes from.

A reader never touches a file object directly; it asks a source for
``(offset, length)`` ranges.  Every request is bounds-checked against the
source size *before* anything is read or allocated, so a hostile length
field becomes an :class:`~iidschema.errors.IIDFormatError` naming the
section and offset instead of a ``MemoryError`` or a short read.

Sources:

* :class:`MmapSource` maps a local file read-only; ranges are zero-copy
  ``memoryview`` slices, and :meth:`ByteSource.gather` uses numpy fancy
  indexing over the map for vectorised record reads.
* :class:`BytesSource` wraps an in-memory buffer (tests, fuzzing, pipes).
* :class:`CountingSource` wraps another source and counts the bytes asked
  for: the tests use it to prove that lazy reads are lazy.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

from .errors import IIDFormatError

__all__ = ["ByteSource", "MmapSource", "BytesSource", "CountingSource", "open_source"]


class ByteSource:
    """Random access to the bytes of one file."""

    #: Total size in bytes.
    size: int = 0
    #: A human-readable name for messages and reprs.
    name: str = "<buffer>"
    #: True once :meth:`close` ran; every read then raises ``ValueError``.
    closed: bool = False

    def ensure_open(self) -> None:
        """Raise ``ValueError`` if the source was closed."""
        if self.closed:
            raise ValueError(f"I/O operation on closed .iid file {self.name!r}")

    def check(self, offset: int, length: int, section: str) -> None:
        """Raise :class:`IIDFormatError` unless ``[offset, offset+length)`` lies in the source
        (``ValueError`` if the source is closed)."""
        self.ensure_open()
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IIDFormatError(
                f"{length} bytes at offset {offset} run past the end of the file ({self.size} bytes)",
                section=section,
                offset=offset,
            )

    def read(self, offset: int, length: int, section: str = "file") -> memoryview:
        """``length`` bytes at ``offset`` (checked)."""
        self.check(offset, length, section)
        return self._read(offset, length)

    def _read(self, offset: int, length: int) -> memoryview:
        raise NotImplementedError

    def buffer(self) -> Any | None:
        """An object supporting the buffer protocol over the whole file, if
        this source can give one without copying (mmap, bytes); else None."""
        return None

    def gather(self, offsets: np.ndarray, size: int, section: str = "file") -> np.ndarray:
        """``size`` bytes at each of ``offsets`` as an ``(n, size)`` uint8 array.

        Vectorised when the source exposes a buffer; one read per offset otherwise.
        """
        offsets = np.asarray(offsets, dtype=np.int64)
        self.ensure_open()
        if offsets.size:
            lo, hi = int(offsets.min()), int(offsets.max())
            self.check(lo, size, section)
            self.check(hi, size, section)
        buf = self.buffer()
        if buf is not None:
            data = np.frombuffer(buf, dtype=np.uint8)
            return data[offsets[:, None] + np.arange(size, dtype=np.int64)]
        out = np.empty((offsets.size, size), dtype=np.uint8)
        for i, off in enumerate(offsets.tolist()):
            out[i] = np.frombuffer(self._read(off, size), dtype=np.uint8)
        return out

    def close(self) -> None:
        """Release the underlying resources (idempotent)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.size} bytes>"


class BytesSource(ByteSource):
    """An in-memory buffer (bytes, bytearray, memoryview)."""

    def __init__(self, data: Any, name: str = "<bytes>"):
        self._data = memoryview(data).cast("B")
        self.size = len(self._data)
        self.name = name

    def _read(self, offset: int, length: int) -> memoryview:
        return self._data[offset : offset + length]

    def buffer(self) -> Any:
        return None if self.closed else self._data

    def close(self) -> None:
        self.closed = True
        self._data = memoryview(b"")


class MmapSource(ByteSource):
    """A local file mapped read-only.

    The reference opened files ``"r+b"`` and could not read a file it was
    not allowed to write; this maps with ``ACCESS_READ``.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.name = os.fspath(path)
        with open(path, "rb") as fh:
            self.size = os.fstat(fh.fileno()).st_size
            # mmap refuses empty files; an empty source still reports a
            # clean "truncated header" error from the reader.
            self._map: mmap.mmap | None = (
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
            )
        self._view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def _read(self, offset: int, length: int) -> memoryview:
        return self._view[offset : offset + length]

    def buffer(self) -> Any:
        return None if self.closed else self._view

    def close(self) -> None:
        """Close the map.

        numpy views handed out earlier (the LUT view, group keys) keep the
        map's buffer exported, and ``mmap.close()`` then raises
        ``BufferError``.  In that case the map is left to be closed by the
        garbage collector once the last view is gone, so existing views
        stay valid instead of pointing at unmapped memory.
        """
        self.closed = True
        view, self._view = self._view, memoryview(b"")
        try:
            view.release()
        except BufferError:  # pragma: no cover - views of the memoryview are ours only
            pass
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None


class CountingSource(ByteSource):
    """Wraps a source and records every range requested from it."""

    def __init__(self, inner: ByteSource):
        self.inner = inner
        self.size = inner.size
        self.name = inner.name
        self.bytes_read = 0
        self.requests: list[tuple[int, int]] = []

    def _read(self, offset: int, length: int) -> memoryview:
        self.bytes_read += length
        self.requests.append((offset, length))
        return self.inner._read(offset, length)

    def gather(self, offsets: np.ndarray, size: int, section: str = "file") -> np.ndarray:
        offsets = np.asarray(offsets, dtype=np.int64)
        self.bytes_read += int(offsets.size) * size
        self.requests.extend((int(o), size) for o in offsets)
        return self.inner.gather(offsets, size, section)

    def buffer(self) -> Any | None:
        # Deliberately hide the buffer so that every byte goes through _read
        # and is counted.
        return None

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def open_source(obj: Any) -> ByteSource:
    """A :class:`ByteSource` for a path, an fsspec URL (any string with
    ``"://"``: :class:`iidschema.remote.FsspecSource`), a buffer, or an
    existing source."""
    if isinstance(obj, ByteSource):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return BytesSource(obj)
    if isinstance(obj, str) and "://" in obj:
        from .remote import FsspecSource  # fsspec is imported only for URLs

        return FsspecSource(obj)
    if isinstance(obj, (str, os.PathLike)):
        return MmapSource(obj)
    raise TypeError(f"cannot read an .iid file from {type(obj).__name__}")
