"""Address index section (format version 1): a sorted hash table.

Every entry contributes one record ``(hash, key)`` with
``hash = XXH3-64(address, seed 0)``; records are sorted by ``(hash, key)``
and a bucket table of ``2^k + 1`` record indices, indexed by the top ``k``
bits of the hash, says where each bucket's records start.  A lookup is two
small reads (the two table entries of its bucket, then the bucket's records,
about 8 on average).  Byte layout: ``docs/INDEXES.md``.

The index only narrows the search: hashes collide, so callers confirm each
candidate key by reading its real IID.

Every record read is checked (bucket membership, strict ``(hash, key)``
order, key range) and raises :class:`~iidschema.errors.IIDFormatError` on a
damaged section; searches in large buckets are binary searches whose number
of steps is bounded by the bucket size alone, so they end on any data.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import xxhash
from construct import ConstructError

from ..errors import IIDFormatError, IIDLimitError
from .spatial import ReadFn, _coalesce, _read_exact

__all__ = [
    "ADDRESS_MAGIC",
    "HASH_XXH3_64",
    "AddressHeader",
    "AddressBucket",
    "AddressRecord",
    "AddressIndex",
    "build_address_index",
    "address_hash",
    "bucket_bits_for",
]

# The byte layout of this section is declared in iidschema/schema.py.
from ..schema import dtype_of, ADDRESS_MAGIC, HASH_XXH3_64, AddressHeader, AddressBucket, AddressRecord  # noqa: E402


SECTION = "address_index"
HEADER_SIZE = AddressHeader.sizeof()  # 16
BUCKET_DTYPE = dtype_of(AddressBucket)
BUCKET_BYTES = BUCKET_DTYPE.itemsize  # 4
RECORD_DTYPE = dtype_of(AddressRecord)
RECORD_BYTES = RECORD_DTYPE.itemsize  # 12
MAX_BUCKET_BITS = 32
MAX_ENTRIES = 0xFFFFFFFF
#: Records per bucket the writer aims at (average, at most).
TARGET_BUCKET = 8
#: Buckets up to this many records are read whole; larger ones (many equal
#: addresses, or damage) are binary-searched.
SCAN_LIMIT = 512


def address_hash(address: bytes) -> int:
    """The 64-bit hash stored for ``address``: XXH3-64 with seed 0."""
    return xxhash.xxh3_64_intdigest(bytes(address))


def bucket_bits_for(num_entries: int) -> int:
    """The writer's ``k``: the smallest ``k >= 0`` with ``N <= 8 * 2^k``."""
    k = 0
    while (TARGET_BUCKET << k) < num_entries:
        k += 1
    return k


def _bucket_of(hashes: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return np.zeros(hashes.shape, dtype=np.int64)
    return (hashes >> np.uint64(64 - k)).astype(np.int64)


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------

def build_address_index(addresses: Sequence[bytes]) -> bytes:
    """The address index section for entry ``i`` having ``addresses[i]``.

    :raises IIDLimitError: for more than ``2^32 - 1`` entries.
    """
    n = len(addresses)
    if n > MAX_ENTRIES:
        raise IIDLimitError(f"the address index holds at most {MAX_ENTRIES} entries, got {n}")
    k = bucket_bits_for(n)
    recs = np.zeros(n, dtype=RECORD_DTYPE)
    # xxhash hashes any buffer as its bytes: one C-level map over the addresses.
    recs["hash"] = np.fromiter(map(xxhash.xxh3_64_intdigest, addresses), dtype=np.uint64, count=n)
    recs["key"] = np.arange(n, dtype=np.uint32)
    recs = recs[np.argsort(recs["hash"], kind="stable")]  # stable: ties by key
    table = np.zeros(1 + (1 << k), dtype=BUCKET_DTYPE)
    buckets = _bucket_of(recs["hash"].astype(np.uint64), k)
    table["start"] = np.searchsorted(buckets, np.arange((1 << k) + 1, dtype=np.int64), side="left")
    header = AddressHeader.build({"hash_id": HASH_XXH3_64, "bucket_bits": k, "num_entries": n})
    return header + table.tobytes() + recs.tobytes()


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------

_EMPTY = np.zeros(0, dtype=np.int64)


class AddressIndex:
    """Query an address index section through ``read(offset, length)``.

    The header is read and checked against ``length`` on construction.

    :raises IIDFormatError: (``section="address_index"``) when the header is
        malformed or disagrees with ``length``; lookups raise it too when a
        record they read is inconsistent.
    """

    def __init__(self, read: ReadFn, offset: int, length: int, *, max_gap: int = 1024):
        self._read = read
        self.offset = int(offset)
        self.length = int(length)
        self._max_gap = max(0, int(max_gap))
        if self.length < HEADER_SIZE:
            raise self._error(f"section is {self.length} bytes, shorter than its {HEADER_SIZE}-byte header", 0)
        raw = _read_exact(read, self.offset, HEADER_SIZE, SECTION)
        try:
            head = AddressHeader.parse(bytes(raw))
        except ConstructError:
            raise self._error("bad magic, expected b'AIDX'", 0) from None
        if head.hash_id != HASH_XXH3_64:
            raise self._error(f"unknown hash function id {head.hash_id}", 4)
        self.bucket_bits = int(head.bucket_bits)
        self.num_entries = int(head.num_entries)
        if self.bucket_bits > MAX_BUCKET_BITS:
            raise self._error(f"{self.bucket_bits} bucket bits, at most {MAX_BUCKET_BITS} allowed", 8)
        self.num_buckets = 1 << self.bucket_bits
        self._records_at = HEADER_SIZE + (self.num_buckets + 1) * BUCKET_BYTES
        expected = self._records_at + self.num_entries * RECORD_BYTES
        if self.length != expected:
            raise self._error(f"section is {self.length} bytes, its header implies {expected}", 0)

    def __len__(self) -> int:
        return self.num_entries

    def __repr__(self) -> str:
        return (f"AddressIndex(entries={self.num_entries}, bucket_bits={self.bucket_bits}, "
                f"offset={self.offset})")

    def _error(self, message: str, rel: int) -> IIDFormatError:
        return IIDFormatError(message, section=SECTION, offset=self.offset + rel)

    def _record_offset(self, i: int) -> int:
        return self._records_at + i * RECORD_BYTES

    # -- reading ------------------------------------------------------------

    def _read_runs(self, starts: np.ndarray, stops: np.ndarray, at: int, size: int, dtype: np.dtype):
        """Read items ``[starts[i], stops[i])`` of the table of ``dtype``
        items at section offset ``at``, coalescing nearby ranges; returns
        ``[(first_item, array)]``."""
        out = []
        for a, b in _coalesce(starts, stops, self._max_gap // size):
            data = _read_exact(self._read, self.offset + at + a * size, (b - a) * size, SECTION)
            out.append((a, np.frombuffer(data, dtype=dtype)))
        return out

    def _bounds(self, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record ranges ``[start, stop)`` of the (sorted, unique) buckets."""
        runs = self._read_runs(buckets, buckets + 2, HEADER_SIZE, BUCKET_BYTES, BUCKET_DTYPE)
        starts = np.empty(len(buckets), dtype=np.int64)
        stops = np.empty(len(buckets), dtype=np.int64)
        for a, arr in runs:
            sel = (buckets >= a) & (buckets + 2 <= a + len(arr))
            starts[sel] = arr["start"][buckets[sel] - a]
            stops[sel] = arr["start"][buckets[sel] + 1 - a]
        bad = (starts > stops) | (stops > self.num_entries)
        if bad.any():
            b = int(buckets[np.argmax(bad)])
            raise self._error(f"bucket {b} spans records {int(starts[np.argmax(bad)])}.."
                              f"{int(stops[np.argmax(bad)])} of {self.num_entries}", HEADER_SIZE + b * BUCKET_BYTES)
        return starts, stops

    def _verify(self, recs: np.ndarray, first: int, bucket: int) -> None:
        """Records ``first ..`` must be in ``bucket``, strictly increasing by
        ``(hash, key)`` and refer to existing keys."""
        h = recs["hash"].astype(np.uint64)
        keys = recs["key"].astype(np.int64)
        bad = _bucket_of(h, self.bucket_bits) != bucket
        bad |= keys >= self.num_entries
        if bad.any():
            i = first + int(np.argmax(bad))
            raise self._error(f"record {i} is outside bucket {bucket} or refers to a key past "
                              f"{self.num_entries} entries", self._record_offset(i))
        order = (h[1:] > h[:-1]) | ((h[1:] == h[:-1]) & (keys[1:] > keys[:-1]))
        if not order.all():
            i = first + 1 + int(np.argmin(order))
            raise self._error(f"record {i} is out of (hash, key) order", self._record_offset(i))

    def _search_large(self, h: int, bucket: int, start: int, stop: int) -> np.ndarray:
        """Keys with hash ``h`` in a large bucket: two bounded binary searches
        (lower and upper bound), then one read of the equal run plus its two
        neighbours, which is verified."""

        def probe(i: int) -> int:
            rec = np.frombuffer(_read_exact(self._read, self.offset + self._record_offset(i), RECORD_BYTES, SECTION),
                                dtype=RECORD_DTYPE)
            self._verify(rec, i, bucket)
            return int(rec["hash"][0])

        lo, hi = start, stop
        while lo < hi:  # first record with hash >= h
            mid = (lo + hi) // 2
            if probe(mid) < h:
                lo = mid + 1
            else:
                hi = mid
        first = lo
        hi = stop
        while lo < hi:  # first record with hash > h
            mid = (lo + hi) // 2
            if probe(mid) <= h:
                lo = mid + 1
            else:
                hi = mid
        last = lo
        a, b = max(first - 1, start), min(last + 1, stop)
        recs = np.frombuffer(_read_exact(self._read, self.offset + self._record_offset(a), (b - a) * RECORD_BYTES,
                                         SECTION), dtype=RECORD_DTYPE)
        self._verify(recs, a, bucket)
        hashes = recs["hash"].astype(np.uint64)
        inner = slice(first - a, last - a)
        if (hashes[inner] != np.uint64(h)).any() or (first > a and int(hashes[0]) >= h) \
                or (last < b and int(hashes[-1]) <= h):
            raise self._error(f"records {a}..{b - 1} are out of hash order", self._record_offset(a))
        return recs["key"][inner].astype(np.int64)

    # -- queries ------------------------------------------------------------

    def lookup(self, address: bytes) -> np.ndarray:
        """Candidate keys (int64, ascending) of entries whose address has the
        same hash as ``address``; confirm them against the real IIDs."""
        if self.num_entries == 0:
            return _EMPTY.copy()
        h = xxhash.xxh3_64_intdigest(bytes(address))
        b = h >> (64 - self.bucket_bits) if self.bucket_bits else 0
        pair = np.frombuffer(_read_exact(self._read, self.offset + HEADER_SIZE + b * BUCKET_BYTES, 2 * BUCKET_BYTES,
                                         SECTION), dtype=BUCKET_DTYPE)
        start, stop = int(pair["start"][0]), int(pair["start"][1])
        if not start <= stop <= self.num_entries:
            raise self._error(f"bucket {b} spans records {start}..{stop} of {self.num_entries}",
                              HEADER_SIZE + b * BUCKET_BYTES)
        if start == stop:
            return _EMPTY.copy()
        if stop - start > SCAN_LIMIT:
            return self._search_large(h, b, start, stop)
        recs = np.frombuffer(_read_exact(self._read, self.offset + self._record_offset(start),
                                         (stop - start) * RECORD_BYTES, SECTION), dtype=RECORD_DTYPE)
        self._verify(recs, start, b)
        return recs["key"][recs["hash"] == np.uint64(h)].astype(np.int64)

    def lookup_many(self, addresses: Iterable[bytes]) -> list[np.ndarray]:
        """:meth:`lookup` for each address, sharing reads between them (one
        pass over the bucket table, one over the records, nearby ranges
        coalesced)."""
        addresses = list(addresses)
        if not addresses:
            return []
        if self.num_entries == 0:
            return [_EMPTY.copy() for _ in addresses]
        hashes = np.fromiter((xxhash.xxh3_64_intdigest(bytes(a)) for a in addresses), dtype=np.uint64,
                             count=len(addresses))
        buckets = _bucket_of(hashes, self.bucket_bits)
        ubuckets, where = np.unique(buckets, return_inverse=True)
        where = where.reshape(-1)
        starts, stops = self._bounds(ubuckets)
        # bucket ranges of increasing buckets are increasing and disjoint
        if len(ubuckets) > 1 and (stops[:-1] > starts[1:]).any():
            u = int(np.argmax(stops[:-1] > starts[1:])) + 1
            raise self._error(f"bucket {int(ubuckets[u])} starts before the end of an earlier bucket",
                              HEADER_SIZE + int(ubuckets[u]) * BUCKET_BYTES)
        small = (stops - starts) <= SCAN_LIMIT
        # all records of the small buckets, in record order, verified at once
        sel = np.flatnonzero(small & (stops > starts))
        counts = stops[sel] - starts[sel]
        total = int(counts.sum())
        rec_idx = np.repeat(starts[sel] - np.cumsum(counts) + counts, counts) + np.arange(total, dtype=np.int64)
        recs = np.empty(total, dtype=RECORD_DTYPE)
        for a, arr in self._read_runs(starts[sel], stops[sel], self._records_at, RECORD_BYTES, RECORD_DTYPE):
            lo, hi = np.searchsorted(rec_idx, [a, a + len(arr)])
            recs[lo:hi] = arr[rec_idx[lo:hi] - a]
        rhash = recs["hash"].astype(np.uint64)
        rkey = recs["key"].astype(np.int64)
        owner = np.repeat(ubuckets[sel], counts)
        bad = (_bucket_of(rhash, self.bucket_bits) != owner) | (rkey >= self.num_entries)
        if bad.any():
            i = int(rec_idx[np.argmax(bad)])
            raise self._error(f"record {i} is outside bucket {int(owner[np.argmax(bad)])} or refers to a key past "
                              f"{self.num_entries} entries", self._record_offset(i))
        same = owner[1:] == owner[:-1]
        ordered = (rhash[1:] > rhash[:-1]) | ((rhash[1:] == rhash[:-1]) & (rkey[1:] > rkey[:-1]))
        if (same & ~ordered).any():
            i = int(rec_idx[1 + np.argmax(same & ~ordered)])
            raise self._error(f"record {i} is out of (hash, key) order", self._record_offset(i))
        # now rhash is sorted (buckets ascend, each is sorted): find each hash's run
        lo = np.searchsorted(rhash, hashes, side="left")
        hi = np.searchsorted(rhash, hashes, side="right")
        results = []
        for i, u in enumerate(where.tolist()):
            if small[u]:
                results.append(rkey[lo[i] : hi[i]].copy())
            else:
                results.append(self._search_large(int(hashes[i]), int(ubuckets[u]), int(starts[u]), int(stops[u])))
        return results
