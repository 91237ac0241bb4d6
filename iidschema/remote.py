"""Lazy reads of remote ``.iid`` files through fsspec.

:class:`FsspecSource` is a :class:`~iidschema.source.ByteSource` over any
fsspec URL (``https://``, ``s3://``, ``gs://``, ``memory://``, ...).  It asks
the storage for byte ranges only (``fs.cat_file(path, start, end)``, and
``fs.cat_ranges`` for batches), so opening a 100 MB remote file and fetching
one entry transfers a few kilobytes::

    import iidschema
    with iidschema.open("https://example.org/image.iid") as f:   # header only
        f.fetch(keys=[12])                                       # + one LUT block, two records
        f.at(210, 110)                                           # version 1: spatial index nodes

``iidschema.open`` / ``IIDFile`` / :func:`iidschema.source.open_source` route
every string containing ``"://"`` here.  Pass a ready source to give storage
options (credentials, headers) or tune the cache::

    src = FsspecSource("s3://bucket/a.iid", block_size=16384, anon=True)
    f = iidschema.IIDFile(src)

Why a block cache of our own rather than ``fs.open(..., cache_type=...)``:

* the reader's access pattern is random and small (header, one LUT block and
  its CRC word at the end of the table, index nodes level by level, one
  record), and fsspec's ``readahead`` cache keeps a single window that such
  a pattern thrashes, while ``blockcache`` fetches every block with its own
  request;
* a file object has a seek position and is not safe to share between
  threads; ``cat_file`` is stateless, so one source can serve the threads of
  a Dask worker (the cache has a lock);
* misses of one read are coalesced into one range request, the misses of a
  :meth:`gather` (LUT rows of many keys, segment heads) are merged across
  small gaps and go out as one ``cat_ranges`` batch (at most 16 requests in
  flight on async filesystems such as HTTP), and
  sequential scans (``fetch(everything=True)``) are detected (three misses
  in a row, each starting where the previous one ended) and read ahead with
  a doubling window up to ``max_readahead``, so a full read costs tens of
  requests, not one per block.

Blocks are 4 KiB by default: the page size, and the checksum block of
version-1 indexes.  A scattered read pays at most a block per place it
touches; a request costs latency, not bytes, so larger blocks buy nothing
for the lazy pattern and the sequential read-ahead covers scans.

The cache is an LRU of fixed-size blocks bounded by ``cache_bytes``.
``requests`` and ``bytes_fetched`` count what went over the wire.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from .source import ByteSource

__all__ = ["FsspecSource", "is_url"]

#: Default cache block: small, because a lazy read touches a handful of
#: scattered places and every block is paid for in transfer.
DEFAULT_BLOCK_SIZE = 4 * 1024
#: Consecutive sequential misses before read-ahead starts (scattered reads
#: that happen to land in successive blocks must not trigger it).
SEQUENTIAL_MISSES = 3
#: Largest read-ahead window of a sequential scan.
DEFAULT_MAX_READAHEAD = 8 * 1024 * 1024
#: Missing blocks separated by at most this many bytes are fetched together
#: by :meth:`FsspecSource.gather`.
DEFAULT_MAX_GAP = 16 * 1024
#: Range requests in flight at once for a batch (async filesystems).
MAX_CONCURRENT = 16
#: Default bound of the block cache.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


def is_url(obj: Any) -> bool:
    """True for strings that name an fsspec URL (``scheme://...``)."""
    return isinstance(obj, str) and "://" in obj


class FsspecSource(ByteSource):
    """A read-only byte source over an fsspec URL, read lazily by byte ranges.

    :param url: any fsspec URL (``https://host/a.iid``, ``s3://b/a.iid``,
        ``memory://a.iid``, chained URLs too).
    :param block_size: cache block size in bytes.
    :param cache_bytes: bound of the block cache (least recently used blocks go first).
    :param max_readahead: largest window a sequential scan fetches at once.
    :param max_gap: a batched read (:meth:`gather`) fetches missing blocks
        separated by at most this many bytes with one request.
    :param fs: an already configured fsspec filesystem (then ``url`` is its path).
    :param storage_options: passed to fsspec (credentials, ``headers``, ``anon=True``...).
    """

    def __init__(
        self,
        url: str,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_readahead: int = DEFAULT_MAX_READAHEAD,
        max_gap: int = DEFAULT_MAX_GAP,
        fs: Any = None,
        **storage_options: Any,
    ):
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if fs is None:
            from fsspec.core import url_to_fs

            fs, path = url_to_fs(url, **storage_options)
        else:
            path = url
        self.fs = fs
        self.path = path
        self.name = url
        self.block_size = int(block_size)
        self.max_blocks = max(1, int(cache_bytes) // self.block_size)
        self.max_gap_blocks = max(0, int(max_gap) // self.block_size)
        self.max_readahead_blocks = max(1, min(int(max_readahead) // self.block_size, self.max_blocks // 2))
        size = fs.size(path)
        if size is None:
            raise OSError(f"{url}: the server does not report the file size; cannot read it by ranges")
        self.size = int(size)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.RLock()
        self._next_block = -1  # first block after the last miss (sequential detection)
        self._window = 1  # read-ahead window in blocks
        self._streak = 0  # consecutive sequential misses
        #: Number of range requests sent.
        self.requests = 0
        #: Bytes received from the storage.
        self.bytes_fetched = 0
        if self.size:
            # Every open starts with the header: fetch its block now, so that
            # a storage that ignores byte ranges fails here, with an OSError
            # that says so, not later as a confusing format error.
            self._ensure([0])

    # -- fetching -----------------------------------------------------------

    def _nblocks(self) -> int:
        return (self.size + self.block_size - 1) // self.block_size

    def _runs(self, blocks: list[int]) -> list[tuple[int, int]]:
        """Missing blocks among ``blocks`` (sorted, unique) as ``[first, last]`` runs."""
        runs: list[tuple[int, int]] = []
        for b in blocks:
            if b in self._blocks:
                continue
            if runs and runs[-1][1] == b - 1:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((b, b))
        return runs

    def _coalesce(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Merge runs separated by at most ``max_gap`` bytes of blocks: a few
        wasted kilobytes are cheaper than a request each (a scan of every
        record head would otherwise be thousands of requests)."""
        gap = self.max_gap_blocks
        out: list[tuple[int, int]] = []
        for first, last in runs:
            if out and first - out[-1][1] - 1 <= gap:
                out[-1] = (out[-1][0], last)
            else:
                out.append((first, last))
        return out

    def _fetch_runs(self, runs: list[tuple[int, int]]) -> None:
        """Fetch block runs (one range request each, batched) into the cache."""
        if not runs:
            return
        bs, size = self.block_size, self.size
        starts = [first * bs for first, _ in runs]
        ends = [min(size, (last + 1) * bs) for _, last in runs]
        if len(runs) == 1:
            datas = [self.fs.cat_file(self.path, start=starts[0], end=ends[0])]
        else:
            extra = {"batch_size": MAX_CONCURRENT} if getattr(self.fs, "async_impl", False) else {}
            datas = self.fs.cat_ranges([self.path] * len(runs), starts, ends, on_error="raise", **extra)
        for (first, last), start, end, data in zip(runs, starts, ends, datas):
            if isinstance(data, BaseException):  # pragma: no cover - on_error="raise" raises first
                raise data
            if len(data) != end - start:
                raise OSError(
                    f"{self.name}: asked for bytes [{start}, {end}), got {len(data)} bytes "
                    "(does the server honour HTTP Range requests?)"
                )
            self.requests += 1
            self.bytes_fetched += len(data)
            view = memoryview(data)
            for b in range(first, last + 1):
                lo = (b - first) * bs
                self._blocks[b] = bytes(view[lo : lo + bs])

    def _evict(self) -> None:
        """Drop least recently used blocks beyond the bound (called once a read
        has taken what it needs, so a read never loses its own blocks)."""
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)

    def _ensure(self, blocks: list[int]) -> None:
        """Make ``blocks`` (sorted, unique) resident, with sequential read-ahead."""
        runs = self._runs(blocks)
        if not runs:
            return
        if len(runs) == 1:
            first, last = runs[0]
            if first == self._next_block:
                self._streak += 1
                if self._streak >= SEQUENTIAL_MISSES:
                    self._window = min(self._window * 2, self.max_readahead_blocks)
            else:
                self._streak = 0
                self._window = 1
            if self._window > 1:
                stop = min(self._nblocks() - 1, max(last, first + self._window - 1))
                # Never re-fetch blocks already held at the end of the window.
                while stop > last and stop in self._blocks:
                    stop -= 1
                runs = [(first, stop)]
            self._next_block = runs[0][1] + 1
        self._fetch_runs(runs)

    def _touch(self, blocks: range | list[int]) -> None:
        for b in blocks:
            if b in self._blocks:
                self._blocks.move_to_end(b)

    # -- ByteSource ---------------------------------------------------------

    def _read(self, offset: int, length: int) -> memoryview:
        if length == 0:
            return memoryview(b"")
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        if last - first + 1 > self.max_blocks:
            # Larger than the whole cache: one request, not cached.
            self.ensure_open()
            data = self.fs.cat_file(self.path, start=offset, end=offset + length)
            if len(data) != length:
                raise OSError(f"{self.name}: asked for {length} bytes at {offset}, got {len(data)}")
            self.requests += 1
            self.bytes_fetched += len(data)
            return memoryview(data)
        with self._lock:
            self.ensure_open()
            self._ensure(list(range(first, last + 1)))
            view = self._assemble(offset, length)
            self._evict()
            return view

    def _assemble(self, offset: int, length: int) -> memoryview:
        """``length`` bytes at ``offset`` from resident blocks (lock held;
        fetches whatever is missing)."""
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        blocks = range(first, last + 1)
        if any(b not in self._blocks for b in blocks):
            self._fetch_runs(self._runs(list(blocks)))
        self._touch(blocks)
        if first == last:
            lo = offset - first * bs
            return memoryview(self._blocks[first])[lo : lo + length]
        out = bytearray(length)
        pos = 0
        for b in blocks:
            block = self._blocks[b]
            lo = offset + pos - b * bs
            n = min(length - pos, len(block) - lo)
            out[pos : pos + n] = block[lo : lo + n]
            pos += n
        return memoryview(out)

    def gather(self, offsets: np.ndarray, size: int, section: str = "file") -> np.ndarray:
        """``size`` bytes at each offset, the missing blocks of all of them
        fetched in one batch of range requests."""
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        self.ensure_open()
        out = np.empty((offsets.size, size), dtype=np.uint8)
        if offsets.size == 0 or size == 0:
            return out
        self.check(int(offsets.min()), size, section)
        self.check(int(offsets.max()), size, section)
        bs = self.block_size
        firsts, lasts = offsets // bs, (offsets + size - 1) // bs
        needed = np.unique(np.concatenate([firsts, lasts]))
        if int((lasts - firsts).max()) > 1:  # records spanning more than two blocks
            needed = np.unique(np.concatenate([np.arange(f, l + 1) for f, l in zip(firsts.tolist(), lasts.tolist())]))
        with self._lock:
            self._fetch_runs(self._coalesce(self._runs(needed.tolist())))
            for i, off in enumerate(offsets.tolist()):
                out[i] = np.frombuffer(self._assemble(off, size), dtype=np.uint8)
            self._evict()
        return out

    def prefetch(self, offset: int = 0, length: int | None = None) -> None:
        """Fetch ``[offset, offset + length)`` (default: the whole file) with one request."""
        length = self.size - offset if length is None else length
        self.check(offset, length, "file")
        if length:
            bs = self.block_size
            with self._lock:
                self._fetch_runs(self._runs(list(range(offset // bs, (offset + length - 1) // bs + 1))))

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the block cache now."""
        return sum(len(b) for b in self._blocks.values())

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._blocks.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for process pools: the cache and the lock stay behind.
        state = self.__dict__.copy()
        state["_blocks"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<FsspecSource {self.name!r} {self.size} bytes, {self.requests} requests, {self.bytes_fetched} bytes fetched>"
