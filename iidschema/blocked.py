"""Blocked sections of version 2: content stored in compressed blocks.

A version-2 section such as ``segs`` holds its *content* (the bytes a
version-1 style parser reads) cut into fixed-size blocks, each compressed on
its own and listed in a block table at the section's start
(:data:`iidschema.schema.BlockTable2`).  Content byte ``o`` lives in block
``o // block_size``, so a reader finds any record's bytes by decompressing
the one or two blocks it spans, never the whole section: random access is
kept while small masks, LUT columns and index nodes compress together.

:class:`BlockedSection` reads and checks one such table and hands out
content ranges (each block verified by its CRC32C before it is
decompressed, its output checked against its declared size, recent blocks
kept in a shared LRU cache).  :class:`ContentSource` presents the contents
of every section of a file as one :class:`~iidschema.source.ByteSource`,
each section at a virtual base of its own, so the record parsers, bulk
walks, group and index readers written for version 1 read version 2
unchanged.  :func:`compress_section` is the writer's side.

No library does this layout (zarr and blosc chunk arrays, not a byte range
addressed by offset with a per-block CRC), so it is written here; zstd does
the compression (``zstandard``).
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import numpy as np
import zstandard
from crc32c import crc32c

from . import schema
from . import masks as _masks
from .errors import IIDChecksumError, IIDFormatError, IIDLimitError
from .masks import exclusive_cumsum
from .source import ByteSource

__all__ = ["BlockError", "decode_block", "BlockedSection", "ContentSource", "compress_section", "assemble_section", "shuffle", "unshuffle", "VIRTUAL_BASE", "SECTION_SPAN"]

#: Virtual offsets of :class:`ContentSource` start here: section ``i``'s
#: content byte ``o`` is at ``VIRTUAL_BASE + i * SECTION_SPAN + o``.  Far
#: above any real file offset, so an error's offset tells which it is.
VIRTUAL_BASE = 1 << 60
SECTION_SPAN = 1 << 52
#: Decompressed blocks kept per file (bytes).
CACHE_BYTES = 64 << 20
#: A read of more blocks than this decompresses them on two threads (zstd
#: lets go of the GIL).
_PARALLEL_BLOCKS = 16


class _Cache:
    """A thread-safe LRU of decompressed blocks, bounded in bytes."""

    def __init__(self, limit: int = CACHE_BYTES):
        self.limit = limit
        self.size = 0
        self.items: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: tuple[int, int], value: bytes) -> None:
        if len(value) > self.limit // 4:
            return  # a huge block would flush everything else
        with self.lock:
            if key in self.items:
                return
            self.items[key] = value
            self.size += len(value)
            while self.size > self.limit:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)


_local = threading.local()
_REF = struct.Struct(schema.format_of(schema.BlockRef2))


def _decompressor() -> Any:
    # A ZstdDecompressor must not be shared between threads at once.
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


class BlockError(ValueError):
    """A stored block that does not decode to its content (the message says
    why); readers and the validator report it with its place."""


def decode_block(data: Any, compression: int, shuffle: int, raw: int) -> bytes:
    """The ``raw`` content bytes of one stored block (its CRC already
    checked), or :class:`BlockError`.

    A zstd block must be exactly one frame that declares its content size,
    and that size must be ``raw``: checked before anything is decompressed,
    since zstd allocates whatever a frame header declares (``max_output_size``
    bounds only frames that declare nothing)."""
    if compression == schema.BLOCK_STORED:
        if len(data) != raw:
            raise BlockError(f"a stored block of {len(data)} bytes for {raw} content bytes")
        out = bytes(data)
    else:
        try:
            declared = zstandard.frame_content_size(data)
            if declared != raw:
                raise BlockError(f"its zstd frame declares {declared} bytes of content, not {raw}" if declared >= 0
                                 else "its zstd frame does not declare its size")
            # One frame and nothing after it (zstandard >= 0.22).
            out = _decompressor().decompress(data, max_output_size=raw, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise BlockError(f"not one valid zstd frame of {raw} bytes ({exc})") from None
        if len(out) != raw:
            raise BlockError(f"it decompresses to {len(out)} bytes, not {raw}")
    return unshuffle(out, shuffle) if shuffle > 1 else out


class BlockedSection:
    """One blocked section: its head and block table, read and checked on
    first use, and its content on demand.

    Opening a file reads nothing of its sections; the first use of a section
    reads its 20-byte head (checked against the header's CRC), and a read of
    content reads only the table rows (16 bytes per block) of the blocks it
    needs, so finding one record of a million-entry file stays a few small
    reads.  A damaged table row is caught by the CRC32C it holds for its
    block, which then fails to match the bytes it points at.

    :param source: the file.
    :param name: the section's name (for messages).
    :param offset, length: where the section lies in the file.
    :param crc: the header's CRC32C of the section's 20-byte head.
    :param cache: the file's block cache (shared by its sections).
    :param sid: a number identifying the section in the cache.
    """

    def __init__(self, source: ByteSource, name: str, offset: int, length: int, crc: int, cache: _Cache, sid: int):
        self.source, self.name, self.offset, self.length, self.crc = source, name, offset, length, crc
        self.cache, self.sid = cache, sid
        self._loaded = False
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._loaded:
            return
        name, offset, length = self.name, self.offset, self.length
        head_size = schema.BLOCKED_HEAD2_SIZE
        if length < head_size:
            raise IIDFormatError(f"blocked section {name!r} is {length} bytes, shorter than its {head_size}-byte head",
                                 section=name, offset=offset)
        head = self.source.read(offset, head_size, name)
        if crc32c(head) != self.crc:
            raise IIDChecksumError(f"head of section {name!r} is damaged (checksum mismatch)", section=name, offset=offset)
        raw_length, block_size, compression, shuffle, count = schema.BLOCKED_HEAD2.unpack(head)
        if block_size == 0 or block_size > schema.MAX_BLOCK_SIZE2:
            raise IIDFormatError(f"block size {block_size} of section {name!r} is not in 1..{schema.MAX_BLOCK_SIZE2}",
                                 section=name, offset=offset + 8)
        if compression not in schema.BLOCK_COMPRESSIONS:
            raise IIDFormatError(f"unknown block compression {compression} in section {name!r}", section=name, offset=offset + 12)
        if count != -(-raw_length // block_size):
            raise IIDFormatError(f"section {name!r}: {raw_length} bytes in blocks of {block_size} need "
                                 f"{-(-raw_length // block_size)} blocks, the table has {count}", section=name, offset=offset + 16)
        self.table_size = head_size + count * schema.BLOCK_REF2_DTYPE.itemsize
        if self.table_size > length:
            raise IIDFormatError(f"block table of section {name!r} ({count} blocks) runs past the section's {length} bytes",
                                 section=name, offset=offset)
        if not count and length != self.table_size:
            raise IIDFormatError(f"section {name!r} holds {length - self.table_size} bytes after an empty block table",
                                 section=name, offset=offset + self.table_size)
        self._raw_length, self._block_size, self.compression, self.shuffle, self._count = (
            raw_length, block_size, compression, shuffle, count)
        # Table rows, read as reads need them.
        self.starts = np.zeros(count, dtype=np.int64)
        self.sizes = np.zeros(count, dtype=np.int64)
        self.crcs = np.zeros(count, dtype=np.int64)
        self.have = np.zeros(count, dtype=np.bool_)
        self._loaded = True

    @property
    def raw_length(self) -> int:
        """Bytes of content."""
        self._load()
        return self._raw_length

    @property
    def block_size(self) -> int:
        self._load()
        return self._block_size

    @property
    def count(self) -> int:
        """Number of blocks."""
        self._load()
        return self._count

    def raw_size(self, b: int) -> int:
        """Content bytes of block ``b`` (the last may be short)."""
        return min(self._block_size, self._raw_length - b * self._block_size)

    def refs(self, first: int, last: int) -> None:
        """Read and check the table rows of blocks ``first..last``: each block
        after the table and inside the section, a stored block exactly its
        content size, and neighbours back to back."""
        self._load()
        if first == last:
            if not self.have[first]:
                self._ref(first)
            return
        if self.have[first : last + 1].all():
            return
        ref = schema.BLOCK_REF2_DTYPE
        at = self.offset + schema.BLOCKED_HEAD2_SIZE + first * ref.itemsize
        rows = np.frombuffer(bytes(self.source.read(at, (last - first + 1) * ref.itemsize, self.name)), dtype=ref)
        starts = rows["offset"]
        sizes = rows["length"].astype(np.int64)
        raw = np.array([self.raw_size(b) for b in range(first, last + 1)], dtype=np.int64)
        bad = (starts < np.uint64(self.table_size)) | (starts > np.uint64(self.length))
        bad |= (starts.astype(np.int64) + sizes > self.length) & ~bad
        if self.compression == schema.BLOCK_STORED:
            bad |= sizes != raw
        ends = starts[:-1].astype(np.int64) + sizes[:-1]
        bad[1:] |= starts[1:].astype(np.int64) != ends
        # The first block right after the table, the last one up to the end.
        if first == 0:
            bad[0] |= int(starts[0]) != self.table_size
        if last == self._count - 1:
            bad[-1] |= int(starts[-1]) + int(sizes[-1]) != self.length
        if bad.any():
            i = int(np.argmax(bad))
            raise IIDFormatError(f"section {self.name!r}: table row of block {first + i} is not valid (blocks lie back to back "
                                 "after the table, inside the section; a stored block holds exactly its content)",
                                 section=self.name, offset=at + i * ref.itemsize)
        with self._lock:
            self.starts[first : last + 1] = starts.astype(np.int64)
            self.sizes[first : last + 1] = sizes
            self.crcs[first : last + 1] = rows["crc"]
            self.have[first : last + 1] = True

    def _ref(self, b: int) -> None:
        """:meth:`refs` of one block, without numpy (a random read's case)."""
        ref = schema.BLOCK_REF2_DTYPE.itemsize
        at = self.offset + schema.BLOCKED_HEAD2_SIZE + b * ref
        start, size, crc = _REF.unpack(self.source.read(at, ref, self.name))
        ok = self.table_size <= start and start + size <= self.length
        if self.compression == schema.BLOCK_STORED:
            ok &= size == self.raw_size(b)
        if b == 0:
            ok &= start == self.table_size
        if b == self._count - 1:
            ok &= start + size == self.length
        if not ok:
            raise IIDFormatError(f"section {self.name!r}: table row of block {b} is not valid (blocks lie back to back "
                                 "after the table, inside the section; a stored block holds exactly its content)",
                                 section=self.name, offset=at)
        with self._lock:
            self.starts[b], self.sizes[b], self.crcs[b] = start, size, crc
            self.have[b] = True

    def where(self, logical: int) -> tuple[int, int]:
        """(block, file offset of its stored bytes, or of the section when its
        table row is not read) of content byte ``logical``."""
        try:
            self._load()
        except IIDFormatError:
            return 0, self.offset
        b = min(max(logical, 0) // self._block_size, max(self._count - 1, 0))
        return b, self.offset + (int(self.starts[b]) if self._count and self.have[b] else 0)

    def _decode(self, b: int, data: Any) -> bytes:
        """Stored block ``b`` (its bytes ``data``) checked and decompressed."""
        at = self.offset + int(self.starts[b])
        if crc32c(data) != int(self.crcs[b]):
            raise IIDChecksumError(f"section {self.name!r}: block {b} is damaged (checksum mismatch)", section=self.name, offset=at)
        try:
            return decode_block(data, self.compression, self.shuffle, self.raw_size(b))
        except BlockError as exc:
            raise IIDFormatError(f"section {self.name!r}: block {b}: {exc}", section=self.name, offset=at) from None

    def blocks(self, first: int, last: int, keep: bool = True, parallel: bool = True) -> list[bytes]:
        """Blocks ``first..last`` decompressed: cached ones from the cache, the
        others read in one range of the file (they lie back to back) and
        decompressed, on two threads when there are many (and ``parallel``:
        a caller that already runs on worker threads passes False, since
        pools inside pools double the CPU time of a bulk read)."""
        out: list[bytes | None] = [self.cache.get((self.sid, b)) for b in range(first, last + 1)]
        missing = [first + i for i, v in enumerate(out) if v is None]
        if missing:
            lo, hi = missing[0], missing[-1]
            self.refs(lo, hi)
            base = int(self.starts[lo])
            span = self.source.read(self.offset + base, int(self.starts[hi] + self.sizes[hi]) - base, self.name)
            jobs = [(b, span[int(self.starts[b]) - base : int(self.starts[b] + self.sizes[b]) - base]) for b in missing]
            if parallel and len(jobs) > _PARALLEL_BLOCKS:
                with ThreadPoolExecutor(max_workers=2) as pool:
                    done = list(pool.map(lambda job: self._decode(*job), jobs))
            else:
                done = [self._decode(b, data) for b, data in jobs]
            for b, data in zip(missing, done):
                out[b - first] = data
                if keep:
                    self.cache.put((self.sid, b), data)
        return out  # type: ignore[return-value]

    def block(self, b: int) -> bytes:
        """Block ``b`` decompressed (and cached): :meth:`blocks` of one, the
        path of every random read, without its lists."""
        data = self.cache.get((self.sid, b))
        if data is None:
            self.refs(b, b)
            at = self.offset + int(self.starts[b])
            data = self._decode(b, self.source.read(at, int(self.sizes[b]), self.name))
            self.cache.put((self.sid, b), data)
        return data

    def read(self, o: int, n: int, parallel: bool = True) -> bytes:
        """Content bytes ``[o, o + n)`` (checked to lie in the content);
        ``parallel`` as for :meth:`blocks`."""
        if o < 0 or n < 0 or o + n > self.raw_length:
            b, at = self.where(o)
            raise IIDFormatError(f"{n} bytes at content offset {o} run past the {self.raw_length} bytes of section {self.name!r}",
                                 section=self.name, offset=at)
        if n == 0:
            return b""
        limit = _masks.MAX_MASK_PIXELS
        if n > limit:
            # Content is decompressed: a small file may declare (and truly
            # hold) far more than it stores.  No single read is larger than
            # the library's mask limit, in bytes.
            raise IIDLimitError(f"reading {n} bytes of section {self.name!r} at once is above the limit of {limit} "
                                "(iidschema.masks.MAX_MASK_PIXELS); raise it if you trust this file")
        size = self.block_size
        first, last = o // size, (o + n - 1) // size
        if first == last:
            start = o - first * size
            return self.block(first)[start : start + n]
        # A large read is not kept: one scan must not flush the cache.
        parts = self.blocks(first, last, keep=(last - first) < 64, parallel=parallel)
        parts[0] = parts[0][o - first * size :]
        parts[-1] = parts[-1][: o + n - last * size]
        return b"".join(parts)


class ContentSource(ByteSource):
    """The contents of every section of a version-2 file as one source.

    Section ``i`` of ``sections`` is at virtual offsets ``VIRTUAL_BASE + i *
    SECTION_SPAN``: blocked sections read through :class:`BlockedSection`,
    plain ones straight from the file.  ``size`` and ``name`` are the file's,
    and closing closes the file.
    """

    def __init__(self, inner: ByteSource, sections: list[tuple[str, int, int, BlockedSection | None]]):
        self.inner = inner
        self.size = inner.size
        self.name = inner.name
        #: per section: (name, file offset, content length (-1: ask the
        #: blocked section), blocked section or None)
        self.sections = sections

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self.inner.closed

    def base(self, i: int) -> int:
        return VIRTUAL_BASE + i * SECTION_SPAN

    def _locate(self, offset: int, length: int, section: str) -> tuple[int, int]:
        """(section index, content offset) of ``[offset, offset + length)``, checked."""
        self.ensure_open()
        i = (offset - VIRTUAL_BASE) // SECTION_SPAN if offset >= VIRTUAL_BASE else -1
        if not 0 <= i < len(self.sections) or length < 0:
            raise IIDFormatError(f"{length} bytes at offset {offset} lie in no section", section=section, offset=offset)
        name, off, size, blocked = self.sections[i]
        if blocked is not None:
            size = blocked.raw_length
        o = offset - self.base(i)
        if o + length > size:
            raise IIDFormatError(f"{length} bytes at content offset {o} run past the {size} bytes of section {name!r}",
                                 section=name, offset=self.physical(offset))
        return i, o

    def check(self, offset: int, length: int, section: str) -> None:
        self._locate(offset, length, section)

    def read(self, offset: int, length: int, section: str = "file") -> Any:
        i, o = self._locate(offset, length, section)
        name, off, _, blocked = self.sections[i]
        if blocked is None:
            return self.inner.read(off + o, length, name)
        # bytes (a buffer, as a memoryview is): ``bytes(...)`` of it is free.
        return blocked.read(o, length)

    def _read(self, offset: int, length: int) -> Any:
        return self.read(offset, length)

    def buffer(self) -> None:
        return None

    def physical(self, offset: int) -> int:
        """The file offset where virtual ``offset`` is stored: itself for a
        plain section, the start of its stored block for a blocked one."""
        if offset < VIRTUAL_BASE:
            return offset
        i = (offset - VIRTUAL_BASE) // SECTION_SPAN
        if not 0 <= i < len(self.sections):
            return offset
        _, off, _, blocked = self.sections[i]
        o = offset - self.base(i)
        return off + o if blocked is None else blocked.where(o)[1]

    def located(self, exc: IIDFormatError) -> IIDFormatError:
        """``exc`` with a virtual offset replaced by the file offset of the
        stored bytes (the content offset kept in the message)."""
        if exc.offset is None or exc.offset < VIRTUAL_BASE:
            return exc
        i = (exc.offset - VIRTUAL_BASE) // SECTION_SPAN
        o = exc.offset - self.base(i)
        where = self.physical(exc.offset)
        name = self.sections[i][0] if 0 <= i < len(self.sections) else exc.section
        blocked = self.sections[i][3] if 0 <= i < len(self.sections) else None
        detail = f"{exc.message} [content offset {o}" + (f", block {blocked.where(o)[0]}]" if blocked is not None else "]")
        new = type(exc).__new__(type(exc))
        IIDFormatError.__init__(new, detail, section=name, offset=where)
        new.__dict__.update({k: v for k, v in exc.__dict__.items() if k not in ("message", "section", "offset")})
        return new

    def close(self) -> None:
        self.inner.close()


def shuffle(data: Any, size: int) -> bytes:
    """Byte-shuffle ``data`` with element size ``size`` (see
    :data:`iidschema.schema.BlockedHead2`): the first ``len // size``
    elements' byte 0s, then their byte 1s, ...; a trailing part shorter
    than an element is left as is."""
    k = len(data) // size * size
    u8 = np.frombuffer(data, dtype=np.uint8)
    return np.ascontiguousarray(u8[:k].reshape(-1, size).T).tobytes() + bytes(u8[k:])


def unshuffle(data: Any, size: int) -> bytes:
    """The inverse of :func:`shuffle`."""
    k = len(data) // size * size
    # One strided copy straight into the bytes (a random read unshuffles a
    # whole index block for a few records: this is most of its cost).
    body = np.frombuffer(data, dtype=np.uint8, count=k).reshape(size, -1).T.tobytes()
    return body if k == len(data) else body + bytes(data[k:])


def compress_section(chunks: Iterable[bytes], block_size: int, level: int = 3, threads: int = 2, element: int = 0) -> list[bytes]:
    """A blocked section holding the content ``b"".join(chunks)``: its head
    and block table, then the blocks (zstd; each byte-shuffled first when
    ``element`` > 1), as a list of byte strings to write in order.  Blocks
    are compressed on ``threads`` threads."""
    data = b"".join(chunks)
    raw_length = len(data)
    view = memoryview(data)
    pieces = [view[i : i + block_size] for i in range(0, raw_length, block_size)]

    def compress(piece: Any) -> bytes:
        zc = getattr(_local, "zc", None)
        if zc is None or getattr(_local, "zc_level", None) != level:
            zc = _local.zc = zstandard.ZstdCompressor(level=level)
            _local.zc_level = level
        return zc.compress(shuffle(piece, element) if element > 1 else piece)

    if threads > 1 and len(pieces) > _PARALLEL_BLOCKS:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            blocks = list(pool.map(compress, pieces))
    else:
        blocks = [compress(p) for p in pieces]
    return assemble_section(raw_length, block_size, schema.BLOCK_ZSTD, element, blocks)


def assemble_section(raw_length: int, block_size: int, compression: int, element: int, blocks: list[bytes]) -> list[bytes]:
    """A blocked section of already stored ``blocks``: its head and block
    table (rows back to back after the table, each with its block's
    CRC32C), then the blocks, as byte strings to write in order."""
    count = len(blocks)
    head = schema.BLOCKED_HEAD2.pack(raw_length, block_size, compression, element, count)
    refs = np.zeros(count, dtype=schema.BLOCK_REF2_DTYPE)
    sizes = np.fromiter(map(len, blocks), dtype=np.int64, count=count)
    refs["length"] = sizes
    refs["offset"] = len(head) + count * refs.dtype.itemsize + exclusive_cumsum(sizes)[:-1]
    refs["crc"] = np.fromiter(map(crc32c, blocks), dtype=np.int64, count=count)
    return [head + refs.tobytes(), *blocks]
