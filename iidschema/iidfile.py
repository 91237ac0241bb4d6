"""``IIDFile``: the drop-in replacement for iidfile 0.2.0's class.

The usage examples of the reference README run unchanged.  Where the
reference was wrong this is right, and ``docs/FORMAT.md`` lists each
difference: ``at(x, y)`` tests exactly pixel (row y, column x); area bounds
are inclusive; results come back in key order; saving a lazily opened file
keeps every entry; files are opened read-only and can be closed.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from . import bulk, schema
from .adding import AddedColumns
from .columnar import MaskColumns, read_masks
from .errors import IIDLimitError
from .groups import Groups, Metadata
from .masks import as_bool_mask, sorted_unique
from .model import IID, BBox, Entry, Segment
from .reader import Reader, open_reader
from .source import ByteSource, open_source
from .writer import atomic_write, check_meta, write_v0, write_v1

__all__ = ["IIDFile", "open", "DEFAULT_VERSION"]

#: Version written for new files when ``save()`` is not told otherwise.
DEFAULT_VERSION = 1

#: Largest coordinate any supported version can store (version 0: 65535).
MAX_COORD = schema.MAX_U32


def _as_bytes(value: Any, what: str, allow_none: bool = False) -> bytes:
    if value is None and allow_none:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, got {type(value).__name__} ({value!r:.40}); encode strings first, e.g. 'x'.encode()")


def _as_bbox(bbox: Any) -> BBox:
    try:
        values = tuple(bbox)
    except TypeError:
        raise TypeError(f"bbox must be a sequence (minr, minc, maxr, maxc), got {bbox!r}") from None
    if len(values) != 4:
        raise ValueError(f"bbox must have 4 values (minr, minc, maxr, maxc), got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"bbox values must be integers, got {v!r} in {values}")
        out.append(int(v))
    minr, minc, maxr, maxc = out
    if min(out) < 0 or max(out) > MAX_COORD:
        raise IIDLimitError(f"bbox {tuple(out)} has coordinates outside 0..{MAX_COORD}")
    if maxr < minr or maxc < minc:
        raise ValueError(f"bbox {tuple(out)} is inverted: need minr <= maxr and minc <= maxc")
    return minr, minc, maxr, maxc


def _as_list(value: Any) -> list | None:
    """None stays None; a scalar (bytes/str) becomes a one-item list; any
    other iterable becomes a list.  (The reference wrapped tuples into a
    one-item list holding the tuple.)"""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, str, int, np.integer)):
        return [value]
    return list(value)


class IIDFile:
    """An ``.iid`` file: entries (IID + segment), groups and metadata.

    ``IIDFile()`` is empty; ``IIDFile(path)`` opens a file lazily: only the
    header is parsed, and entries are read when fetched or queried.  Close it
    (or use it as a context manager) to release the memory map.
    """

    def __init__(self, fpath: str | os.PathLike[str] | bytes | ByteSource | None = None):
        self.fpath: str | None = None
        self._reader: Reader | None = None
        if fpath is not None:
            source = open_source(fpath)
            try:
                self._reader = open_reader(source)
            except BaseException:
                source.close()
                raise
            if isinstance(fpath, (str, os.PathLike)) and "://" not in os.fspath(fpath):
                self.fpath = os.fspath(fpath)  # remote files are not a default save target
        self._disk_count = self._reader.count if self._reader else 0
        self._entries: dict[int, Entry] = {}
        # Entries made by add_many(), kept as their columns until one is asked
        # for (an Entry each would cost more than the rest of add_many):
        # ascending, disjoint key ranges, with their first keys for bisect.
        self._added: list[AddedColumns] = []
        self._added_firsts: list[int] = []
        self._count = self._disk_count
        self._loaded_segs: set[int] = set()
        self.version: int = self._reader.version if self._reader else DEFAULT_VERSION
        self.rformat: int = self._reader.rformat if self._reader else 0
        self.groups = Groups(self)
        self.meta = Metadata(self)

    # -- container protocol -------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        for key in range(self._count):
            yield self._entry(key)

    def __getitem__(self, key: int) -> Entry:
        return self._entry(self._check_key(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (int, np.integer)) and 0 <= int(key) < self._count

    def __enter__(self) -> "IIDFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = repr(self.fpath) if self.fpath else ("in memory" if self._reader is None else repr(self._reader.source.name))
        return (
            f"<IIDFile {where} version={self.version} entries={self._count} "
            f"loaded_segments={len(self._loaded_segs) + self._count - self._disk_count}>"
        )

    def close(self) -> None:
        """Release the file.  Entries already loaded stay usable; unloaded
        ones can no longer be read."""
        if self._reader is not None:
            self._reader.close()

    @property
    def lut(self) -> np.ndarray:
        """The on-disk lookup table as a read-only numpy structured view
        (fields follow :data:`iidschema.schema.LutEntry0`)."""
        if self._reader is None:
            raise ValueError("an in-memory IIDFile has no on-disk lookup table; save and reopen it")
        return self._reader.lut  # type: ignore[attr-defined]

    # -- loading ------------------------------------------------------------

    def _check_key(self, key: Any) -> int:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"keys are integers, got {key!r}")
        key = int(key)
        if not 0 <= key < self._count:
            raise KeyError(f"key {key} out of range (file has {self._count} entries)")
        return key

    def _entry(self, key: int) -> Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._new_entry(key)
        return entry

    def _new_entry(self, key: int) -> Entry:
        """A new entry object for ``key``: from the columns of add_many()
        when it was added there, else to be read from the file."""
        found = self._columns_of(key)
        if found is None:
            return Entry(key, None, None, self)
        cols, i = found
        return Entry(key, None, None, self, cols, i)

    def _columns_of(self, key: int) -> tuple[AddedColumns, int] | None:
        """The add_many() columns holding ``key`` and its index there, or None."""
        at = bisect.bisect_right(self._added_firsts, key) - 1
        if at >= 0:
            cols = self._added[at]
            i = key - cols.first_key
            if i < len(cols):
                return cols, i
        return None

    def _added_rows(self, keys: np.ndarray) -> Iterator[tuple[AddedColumns, np.ndarray, np.ndarray]]:
        """For each add_many() call holding some of ``keys`` (any order):
        ``(its columns, indexes into keys, their rows in the columns)``."""
        if not self._added or not keys.size:
            return
        firsts = np.asarray(self._added_firsts, dtype=np.int64)
        lengths = np.fromiter(map(len, self._added), np.int64, len(self._added))
        at = np.searchsorted(firsts, keys, side="right") - 1
        safe = np.maximum(at, 0)
        rows = keys - firsts[safe]
        held = np.flatnonzero((at >= 0) & (rows < lengths[safe]))
        if not held.size:
            return
        held = held[np.argsort(at[held], kind="stable")]
        for part in np.split(held, np.flatnonzero(np.diff(at[held])) + 1):
            yield self._added[int(at[part[0]])], part, rows[part]

    def _loaded_keys(self) -> np.ndarray:
        """Keys whose segment is in memory (read, or added), ascending."""
        keys = [k for k, e in self._entries.items() if e.seg_loaded]
        parts = [np.asarray(keys, dtype=np.int64)]
        parts += [np.arange(c.first_key, c.first_key + len(c), dtype=np.int64) for c in self._added]
        return sorted_unique(np.concatenate(parts))

    def _read_iid(self, key: int) -> IID:
        assert self._reader is not None
        return self._reader.iid(key)

    def _read_segment(self, key: int) -> Segment:
        assert self._reader is not None
        return self._reader.segment(key)

    def _is_seg_loaded(self, key: int) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return self._columns_of(key) is not None
        return entry.seg_loaded

    def _all_keys(self) -> np.ndarray:
        return np.arange(self._count, dtype=np.int64)

    def _group_keys(self, groups: Any) -> np.ndarray:
        names = _as_list(groups) or []
        keys = [self.groups.keys(name) for name in names]
        if len(keys) == 1:
            return keys[0]  # already sorted and unique (read-only)
        return sorted_unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    def _select(self, keys: Any = None, groups: Any = None, all_keys: bool = False) -> np.ndarray:
        if all_keys:
            return self._all_keys()
        parts = []
        if keys is not None:
            parts.append(np.array([self._check_key(k) for k in _as_list(keys)], dtype=np.int64))
        if groups is not None:
            parts.append(self._group_keys(groups))
        return sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def _heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """bboxes (n, 4) and areas of ``keys`` without decoding masks."""
        boxes = np.zeros((keys.size, 4), dtype=np.int64)
        areas = np.zeros(keys.size, dtype=np.int64)
        on_disk = keys < self._disk_count
        if on_disk.any() and self._reader is not None:
            boxes[on_disk], areas[on_disk] = self._reader.heads(keys[on_disk])
        added = ~on_disk
        where = np.flatnonzero(added)
        for cols, idx, rows in self._added_rows(keys[where]):  # (no Segment, no mask for a bbox)
            boxes[where[idx]], areas[where[idx]] = cols.bboxes[rows], cols.areas[rows]
            added[where[idx]] = False
        for i in np.flatnonzero(added).tolist():  # entries made by add()
            seg = self._entries[int(keys[i])].seg
            boxes[i], areas[i] = seg.bbox, seg.area
        return boxes, areas

    def _entries_of(self, keys: np.ndarray, iids: bool = False, segs: bool = False) -> list[Entry]:
        """Entries of ``keys``; with ``iids``/``segs`` their missing parts are
        read now, in one bulk pass over the file."""
        # Millions of small objects, none of them garbage: the cyclic collector
        # would rescan them over and over (about a fifth of a bulk fetch).
        with _gc_paused():
            klist = keys.tolist()
            ents = self._entries
            missing = [k for k in klist if k not in ents] if ents else klist
            if missing:
                if self._added and max(missing) >= self._added_firsts[0]:
                    made = list(map(self._new_entry, missing))
                else:
                    made = [Entry(k, None, None, self) for k in missing]
                ents.update(zip(missing, made))
            entries = list(map(ents.__getitem__, klist))
            if self._reader is not None:
                if iids:
                    self._load(entries, "iid")
                if segs:
                    self._load(entries, "seg")
        return entries

    def _load(self, entries: list[Entry], kind: str) -> None:
        """Read the ``kind`` ("iid"/"seg") records of the on-disk ``entries``
        that lack them: many at once through :mod:`iidschema.bulk` (records
        checked now, objects made on first access), a few one by one."""
        assert self._reader is not None
        if kind == "iid":
            need = [e for e in entries if not e.iid_loaded and e.key < self._disk_count]
        else:
            need = [e for e in entries if not e.seg_loaded and e.key < self._disk_count]
        if not need:
            return
        keys = np.fromiter((e.key for e in need), dtype=np.int64, count=len(need))
        batch = None
        if len(need) >= bulk.BULK_MIN:
            batch = bulk.iid_batch(self._reader, keys) if kind == "iid" else bulk.segment_batch(self._reader, keys)
        if batch is None:
            if kind == "iid":
                for e, iid in zip(need, self._reader.iids(keys)):
                    e._iid = iid
            else:
                for e, seg in zip(need, self._reader.segments(keys)):
                    e._seg = seg
                self._loaded_segs.update(keys.tolist())
            return
        if kind == "iid":
            for i, e in enumerate(need):
                e._ib, e._ii = batch, i
        else:
            for i, e in enumerate(need):
                e._sb, e._si = batch, i
            self._loaded_segs.update(keys.tolist())

    def fetch(
        self,
        keys: int | Iterable[int] | None = None,
        all_keys: bool = False,
        groups: str | Iterable[str] | None = None,
        iids: bool = True,
        segs: bool = True,
        everything: bool = False,
        *,
        group: str | Iterable[str] | None = None,
    ) -> list[Entry]:
        """Load entries and return them in key order.

        :param keys: a key or keys to fetch.
        :param all_keys: fetch every entry (still honouring ``iids``/``segs``).
        :param groups: a group name or names; their keys are added to ``keys``
            (the reference silently ignored ``keys`` when ``groups`` was given).
        :param iids: load the entries' IIDs now.
        :param segs: load the entries' segments now.
        :param everything: load every entry completely.
        :param group: alias of ``groups``, so that the reference README's
            ``fetch(group=['sys'], ...)`` example runs (iidfile 0.2.0 itself
            raised ``TypeError`` there).

        Parts not loaded now are read on first access, so returned entries
        are always complete.
        """
        if group is not None:
            groups = list(_as_list(groups) or []) + list(_as_list(group) or [])
        if everything:
            return self._entries_of(self._all_keys(), iids=True, segs=True)
        return self._entries_of(self._select(keys, groups, all_keys), iids=iids, segs=segs)

    def masks(
        self,
        keys: int | Iterable[int] | None = None,
        groups: str | Iterable[str] | None = None,
        *,
        iids: bool = False,
        max_pixels: int | None = None,
    ) -> MaskColumns:
        """Every mask of a selection, decoded, as columns (no object per entry).

        With neither ``keys`` nor ``groups``, every entry; otherwise the
        entries of ``keys`` and of ``groups``, in key order.  Returns a
        :class:`~iidschema.columnar.MaskColumns`: ``keys``, ``bboxes`` and
        ``areas`` arrays, and the masks as views into a few large buffers
        (``cols[i]``, ``for m in cols``, ``cols.mask(key)``).  Much faster
        than ``fetch()`` + ``mask()`` per entry when the selection is large
        (one decoder call per codec instead of Python objects per entry).

        :param iids: also read the entries' ``addresses`` and ``domains``
            (lists of bytes on the returned columns).
        :param max_pixels: bound on the pixels decoded (default
            :data:`iidschema.masks.MAX_MASK_PIXELS`), checked before anything
            is allocated (:class:`IIDLimitError` above it).
        """
        if keys is None and groups is None:
            selected = self._all_keys()
        else:
            selected = self._select(keys, groups)
        return read_masks(self, selected, max_pixels=max_pixels, iids=iids)

    # -- building -----------------------------------------------------------

    def add(
        self,
        address: bytes,
        domain: bytes | None,
        bbox: Sequence[int],
        mask: Any,
        group: str | Iterable[str] | None = None,
    ) -> Entry:
        """Add an entry and return it.

        :param address: the IID's address (bytes).
        :param domain: the IID's domain (bytes; ``None`` means ``b""``).
        :param bbox: (minr, minc, maxr, maxc) of the mask in the image, max
            exclusive; must match the mask's shape.
        :param mask: a 2-D boolean-convertible array (non-zero = set).
        :param group: a group name (or names) to add the entry to.
        """
        # Only cheap checks here, with a fast path for the common types
        # (bytes, a tuple of 4 ints, a C-contiguous bool array, one group
        # name); encoding happens in bulk at save().
        if type(address) is not bytes:
            address = _as_bytes(address, "address")
        if domain is None:
            domain = b""
        elif type(domain) is not bytes:
            domain = _as_bytes(domain, "domain")
        if type(bbox) is tuple and len(bbox) == 4:
            minr, minc, maxr, maxc = bbox
            if not (
                type(minr) is int and type(minc) is int and type(maxr) is int and type(maxc) is int
                and 0 <= minr <= maxr <= MAX_COORD and 0 <= minc <= maxc <= MAX_COORD
            ):
                bbox = _as_bbox(bbox)
            box = bbox
        else:
            box = _as_bbox(bbox)
        if type(mask) is np.ndarray and mask.dtype == np.bool_ and mask.ndim == 2:
            # The caller may reuse their array; the entry must not change with it.
            arr = mask.copy()  # C order
        else:
            arr = as_bool_mask(mask)
            if isinstance(mask, np.ndarray) and np.may_share_memory(arr, mask):
                arr = arr.copy()
        if arr.shape != (box[2] - box[0], box[3] - box[1]):
            raise ValueError(f"mask shape {arr.shape} does not match bbox {box} (needs {(box[2] - box[0], box[3] - box[1])})")
        if type(group) is str:
            names: Sequence[Any] = (group,)
        else:
            names = _as_list(group) or ()
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"group names are str, got {name!r}")
        key = self._count
        seg = Segment.from_added(key, box, int(np.count_nonzero(arr)), arr)
        entry = Entry(key, IID(address, domain, key), seg, loader=self)
        self._entries[key] = entry
        self._count += 1
        for name in names:
            self.groups._append(name, key)
        return entry

    def add_many(
        self,
        addresses: Sequence[bytes],
        domains: bytes | Sequence[bytes | None] | None,
        bboxes: Any,
        masks: Sequence[Any],
        groups: str | Sequence[str | Iterable[str] | None] | None = None,
    ) -> range:
        """Add many entries at once and return their keys (a ``range``).

        The same as calling :meth:`add` for each item in order (the saved
        file is byte for byte the same), about 10 times faster: the
        arguments are checked in bulk and the masks packed into one bit
        stream; the entries, with their IIDs and segments, are made on
        first access.

        :param addresses: one address (bytes) per entry.
        :param domains: one domain (bytes, ``None`` for ``b""``) for every
            entry, or a sequence of one per entry.
        :param bboxes: ``(n, 4)`` integers (an array, or a sequence of
            4-sequences), as ``add()``'s ``bbox``.
        :param masks: one 2-D mask per entry, shaped like its bbox (any
            bool-convertible array; C-contiguous bool arrays are fastest).
        :param groups: ``None``, one group name for every entry, or a
            sequence of one item per entry: a name, several names, or
            ``None``.

        Every item is checked as :meth:`add` checks it, before anything is
        added: the first bad item raises ``add()``'s error with its index
        (``"add_many item 3: ..."``), and the file is left unchanged.
        """
        from .adding import prepare

        first = self._count
        with _gc_paused():  # (the collector would rescan every live entry and mask meanwhile)
            cols, group_keys = prepare(first, addresses, domains, bboxes, masks, groups, MAX_COORD, _check_one)
        n = len(cols)
        keys = range(first, first + n)
        if n:
            self._added.append(cols)
            self._added_firsts.append(first)
        self._count += n
        for name, members in group_keys.items():
            self.groups.add(name, members)
        return keys

    # -- queries ------------------------------------------------------------

    def look_for(
        self,
        addresses: bytes | Iterable[bytes],
        domains: bytes | Iterable[bytes | None] | None = None,
        groups: str | Iterable[str] | None = None,
        segs: bool = False,
    ) -> list[Entry]:
        """Entries whose address is one of ``addresses`` (and domain one of
        ``domains``, in ``groups`` when given), in key order."""
        wanted = {_as_bytes(a, "address") for a in _as_list(addresses) or []}
        doms = None if domains is None else {_as_bytes(d, "domain", allow_none=True) for d in _as_list(domains)}
        candidates = self._reader.lookup(sorted(wanted)) if self._reader is not None else None
        new = np.arange(self._disk_count, self._count, dtype=np.int64)
        if candidates is None:
            keys = self._group_keys(groups) if groups is not None else self._all_keys()
            keys = self._narrow_by_address(keys, wanted)
        elif groups is None:
            keys = np.concatenate([candidates, new])  # disk keys all precede added ones
        else:
            in_groups = self._group_keys(groups)
            keys = np.intersect1d(in_groups, np.concatenate([candidates, new]), assume_unique=True)
        out = []
        for entry in self._entries_of(keys, iids=True):
            iid = entry.iid
            if iid.address in wanted and (doms is None or iid.domain in doms):
                if segs:
                    entry.seg
                out.append(entry)
        return out

    def _narrow_by_address(self, keys: np.ndarray, wanted: set[bytes]) -> np.ndarray:
        """``keys`` less on-disk entries whose address cannot be wanted, for
        files without an address index: the IID records are read in bulk
        and compared with numpy, so only candidates become entries."""
        on_disk = keys < self._disk_count
        if self._reader is None or int(on_disk.sum()) < bulk.BULK_MIN:
            return keys
        disk = keys[on_disk]
        batch = bulk.iid_batch(self._reader, disk)
        if batch is None:
            return keys
        return np.concatenate([disk[batch.find(wanted)], keys[~on_disk]])

    def filter(
        self,
        groups: str | Iterable[str] | None = None,
        area: tuple[int | None, int | None] | None = None,
        domains: bytes | Iterable[bytes | None] | None = None,
        iids: bool = True,
        segs: bool = False,
    ) -> list[Entry]:
        """Entries in ``groups`` whose area lies in ``area = (lo, hi)``
        (inclusive; ``None`` leaves a side open) and whose domain is one of
        ``domains``, in key order."""
        keys = self._group_keys(groups) if groups is not None else self._all_keys()
        if area is not None:
            lo, hi = area
            _, areas = self._heads(keys)
            keep = np.ones(keys.size, dtype=bool)
            if lo is not None:
                keep &= areas >= lo
            if hi is not None:
                keep &= areas <= hi
            keys = keys[keep]
        entries = self._entries_of(keys, iids=iids, segs=segs)
        if domains is not None:
            doms = {_as_bytes(d, "domain", allow_none=True) for d in _as_list(domains)}
            entries = [e for e in entries if e.iid.domain in doms]
        return entries

    def _candidates(self, box: BBox, only_loaded: bool) -> np.ndarray:
        """Keys whose segment bbox intersects ``box``, ascending.

        Entries on disk come from the reader (version 1: its spatial index);
        entries added since opening, or with ``only_loaded`` the loaded ones,
        are tested here.
        """
        if only_loaded:
            disk = np.zeros(0, np.int64)
            keys = self._loaded_keys()
        else:
            disk = self._reader.candidates(box) if self._reader is not None else np.zeros(0, np.int64)
            keys = np.arange(self._disk_count, self._count, dtype=np.int64)
        boxes, _ = self._heads(keys)
        minr, minc, maxr, maxc = box
        hit = (boxes[:, 0] < maxr) & (minr < boxes[:, 2]) & (boxes[:, 1] < maxc) & (minc < boxes[:, 3])
        return np.concatenate([disk, keys[hit]])  # disk keys all precede added ones

    def at(self, x: int, y: int, only_loaded: bool = False) -> list[Entry]:
        """Entries whose mask covers pixel (row ``y``, column ``x``), in key order."""
        x, y = int(x), int(y)
        keys = self._candidates((y, x, y + 1, x + 1), only_loaded)
        return [e for e in self._entries_of(keys) if e.seg.covers(y, x)]

    def region(self, bbox: Sequence[int], only_loaded: bool = False) -> list[Entry]:
        """Entries with at least one mask pixel inside ``bbox`` (minr, minc,
        maxr, maxc; max exclusive), in key order."""
        box = tuple(int(v) for v in bbox)
        if len(box) != 4:
            raise ValueError(f"bbox must have 4 values, got {bbox!r}")
        keys = self._candidates(box, only_loaded)  # type: ignore[arg-type]
        return [e for e in self._entries_of(keys) if e.seg.intersects_bbox(box)]  # type: ignore[arg-type]

    def overlap_graph(self, everything: bool = True) -> tuple[list[Entry], list[tuple[Entry, Entry, int]]]:
        """Nodes (entries) and edges ``(a, b, pixels)`` for every pair of
        segments sharing at least one pixel, ``a.key < b.key``, in key order.

        Candidate pairs come from a sort-and-sweep over bboxes, not an
        all-pairs scan.
        """
        if everything:
            keys = self._all_keys()
        else:
            keys = self._loaded_keys()
        nodes = self._entries_of(keys, iids=everything, segs=True)
        boxes, _ = self._heads(keys)
        edges = []
        for i, j in _overlapping_pairs(boxes):
            a, b = nodes[i], nodes[j]
            pixels = a.seg.intersects_segment(b.seg)
            if pixels:
                edges.append((a, b, pixels))
        return nodes, edges

    compute_overlap = overlap_graph

    # -- saving -------------------------------------------------------------

    def _records(self) -> Iterator[tuple[IID, Segment] | Any]:
        """Every entry, loaded or not; unloaded ones are read without decoding
        masks.  Entries made by :meth:`add_many` come as the columns they
        share (an :class:`~iidschema.adding.AddedColumns`; the writers take both)."""
        key, count, entries = 0, self._count, self._entries
        added = iter(self._added)
        cols = next(added, None)
        while key < count:
            if cols is not None and key >= cols.first_key:
                yield cols  # (add_many() entries follow every key before them)
                key = cols.first_key + len(cols)
                cols = next(added, None)
                continue
            entry = entries.get(key)
            iid = entry.iid if entry is not None and entry.iid_loaded else self._read_iid(key)
            seg = entry.seg if entry is not None and entry.seg_loaded else self._read_segment(key)
            yield iid, seg
            key += 1

    def _save_records(self) -> Iterable[tuple[IID, Segment] | Any]:
        """What :meth:`save` writes: :meth:`_records`; for a file built in
        memory (every entry added, nothing to read) as a list, so that the
        writer can look ahead, and for entries made by :meth:`add` their own
        IIDs and segments without a property call per entry."""
        entries = self._entries
        if self._reader is not None:
            return self._records()
        if len(entries) == self._count and (
            not self._count or (entries[0]._iid is not None and entries[self._count - 1]._iid is not None)
        ):
            records = [(entries[key]._iid, entries[key]._seg) for key in range(self._count)]
            if all(iid is not None and seg is not None for iid, seg in records):
                return records  # type: ignore[return-value]
        return list(self._records())  # (add_many() columns, or entries made from them)

    def save(self, fpath: str | os.PathLike[str] | None = None, version: int | None = None, codec: Any = "auto") -> None:
        """Write the file atomically (temporary file + rename).

        Every entry is kept, whether it was loaded or not, even when saving
        over the file this object was opened from.

        :param fpath: target path (default: the path this file was opened from).
        :param version: format version to write (default: the opened file's
            version, or :data:`DEFAULT_VERSION` for a new file).  Version 0 is
            the iidfile 0.2.0 layout: it refuses what it cannot hold
            (coordinates over 65535, files over 4 GiB) and stores every
            region as packbits.
        :param codec: versions 1 and 2: the mask codec of every region (id,
            name or codec object), or ``"auto"``: in version 1 the smallest
            per region; in version 2 ``packbits`` over every bbox (its
            blocks are compressed with zstd, which beats a codec per mask).
            Version 2 is the most compact and the fastest to read in bulk.
        """
        if fpath is None:
            if self.fpath is None:
                raise ValueError("save() needs a path for a file that was not opened from one")
            fpath = self.fpath
        version = self.version if version is None else version
        meta = self.meta.data
        check_meta(meta)
        groups = self.groups.as_dict()
        if version == 0:
            write = lambda fh: write_v0(fh, self._save_records(), self._count, groups, meta, rformat=self.rformat)  # noqa: E731
        elif version == 1:
            write = lambda fh: write_v1(fh, self._save_records(), self._count, groups, meta, codec=codec, rformat=self.rformat)  # noqa: E731
        elif version == 2:
            from .writer2 import write_v2

            write = lambda fh: write_v2(fh, self._save_records(), self._count, groups, meta, codec=codec, rformat=self.rformat)  # noqa: E731
        else:
            raise IIDLimitError(f"cannot write format version {version}; supported: {', '.join(map(str, schema.SUPPORTED_VERSIONS))}")
        # Encoding builds many short-lived objects while every entry is alive:
        # the cyclic collector would rescan all entries over and over.
        with _gc_paused():
            atomic_write(fpath, write)
        self._reopen(os.fspath(fpath))

    def _reopen(self, path: str) -> None:
        """Point this object at the file just written: every entry is in it."""
        if self._reader is None:
            loaded = self._entries  # every entry was added here: all are loaded
        else:
            loaded = {k: e for k, e in self._entries.items() if e.iid_loaded or e.seg_loaded}
        old = self._reader
        self._reader = open_reader(open_source(path))
        self.fpath = path
        self._disk_count = self._count
        self._entries = loaded
        self.version = self._reader.version
        if old is not None:
            old.close()


def _check_one(address: Any, domain: Any, bbox: Any, mask: Any, group: Any) -> Entry:
    """``add()`` of one item on a scratch file: how :meth:`IIDFile.add_many`
    checks (and converts) items of uncommon types, with add()'s own errors."""
    return IIDFile().add(address, domain, bbox, mask, group=group)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if it runs) for a bulk build."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _overlapping_pairs(boxes: np.ndarray, chunk: int = 1 << 22) -> Iterator[tuple[int, int]]:
    """Index pairs (i < j) of intersecting non-empty half-open boxes, in
    order, by sort-and-sweep on rows: each box is tested only against the
    boxes that start (in row order) before its bottom row.

    Vectorised: the candidates of many boxes are expanded at once with
    ``np.repeat``, at most about ``chunk`` candidate pairs at a time so that
    memory stays bounded when many boxes share rows.
    """
    n = len(boxes)
    if n < 2:
        return
    order = np.argsort(boxes[:, 0], kind="stable")
    b = boxes[order]
    nonempty = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    pos = np.arange(n)
    # Candidates of sorted box p: positions p+1 .. end[p]-1 (they start above its bottom).
    count = np.maximum(np.searchsorted(b[:, 0], b[:, 2], side="left") - pos - 1, 0)
    count[~nonempty] = 0
    found = []
    lo = 0
    cum = np.cumsum(count)
    while lo < n:
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + chunk, side="right"))
        hi = min(max(hi, lo + 1), n)
        c = count[lo:hi]
        i = np.repeat(pos[lo:hi], c)
        j = i + 1 + (np.arange(i.size) - np.repeat(np.cumsum(c) - c, c))
        ok = nonempty[j] & (b[j, 1] < b[i, 3]) & (b[i, 1] < b[j, 3])
        i, j = order[i[ok]], order[j[ok]]
        found.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
        lo = hi
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    yield from zip(pairs[:, 0].tolist(), pairs[:, 1].tolist())


def open(path: str | os.PathLike[str] | bytes | ByteSource) -> IIDFile:
    """Open an ``.iid`` file lazily (same as ``IIDFile(path)``)."""
    return IIDFile(path)
