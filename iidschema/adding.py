"""Adding many entries at once: :meth:`IIDFile.add_many`.

``add()`` costs a few microseconds per call, most of it Python: checking the
arguments, copying the mask, making an entry, an IID and a segment.
``add_many`` checks all its arguments with a few array operations, packs every
mask into one bit stream with one ``np.packbits`` per chunk (which is also
its copy of the pixels), counts the areas on that stream, and keeps the
entries' data as columns (:class:`AddedColumns`, in ``IIDFile._added``).  An
entry object, and its IID and segment, are made from the columns only when
asked for; ``masks()`` unpacks the columns' stream in one call, and
``save()`` hands the columns to the writers, which encode straight from the
packed stream.  The file written is byte for byte the one an ``add()`` loop
writes (``tests/test_add_many.py``).

Validation follows ``add()`` exactly: every item that is not of the common
types (bytes, an integer bbox, a 2-D bool array, a group name or None) is
checked by ``add()`` itself, on a scratch file, so it is accepted or refused
with ``add()``'s own error, prefixed with the item's index.  Nothing is added
unless every item is valid.
"""

from __future__ import annotations

import itertools
import operator
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .masks import exclusive_cumsum
from .model import IID, Entry, Segment

if TYPE_CHECKING:  # pragma: no cover
    from .codecs.packbits import PackedMasks

__all__ = ["AddedColumns", "prepare", "popcounts"]

#: Bits set in each byte value (``np.bitwise_count`` needs numpy 2).
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)


class AddedColumns:
    """Consecutive entries (keys ``first_key ..``) kept as columns.

    :ivar addresses: ``bytes`` per entry (a list).
    :ivar domains: ``bytes`` per entry (a list).
    :ivar bboxes: ``(n, 4)`` int64, read-only.
    :ivar areas: ``(n,)`` int64, read-only.
    :ivar packed: every mask, shaped like its bbox, in one
        :class:`~iidschema.codecs.packbits.PackedMasks` stream.

    Entries made by :meth:`IIDFile.add_many` point here; :meth:`iid` and
    :meth:`segment` make their objects on first access.  Slicing gives the
    columns of a run of those entries (views, no copy of the pixels).
    """

    __slots__ = ("first_key", "addresses", "domains", "bboxes", "areas", "packed")

    def __init__(self, first_key: int, addresses: list[bytes], domains: list[bytes], bboxes: np.ndarray,
                 areas: np.ndarray, packed: PackedMasks):
        self.first_key = first_key
        self.addresses = addresses
        self.domains = domains
        self.bboxes = bboxes
        self.areas = areas
        self.packed = packed

    def __len__(self) -> int:
        return len(self.addresses)

    def __getitem__(self, part: slice) -> "AddedColumns":
        a, b, step = part.indices(len(self))
        if step != 1:
            raise ValueError("AddedColumns slices are contiguous")
        from .crops import packed_slice  # not at import: importing iidschema loads no codec

        b = max(a, b)
        sub = packed_slice(self.packed, a, b)
        return AddedColumns(self.first_key + a, self.addresses[a:b], self.domains[a:b], self.bboxes[a:b],
                            self.areas[a:b], sub)

    def iid(self, i: int) -> IID:
        return IID(self.addresses[i], self.domains[i], self.first_key + i)

    def mask(self, i: int) -> np.ndarray:
        """A new bool array of mask ``i``."""
        pm = self.packed
        h, w = int(pm.heights[i]), int(pm.widths[i])
        bits = np.unpackbits(pm.packed[pm.starts[i] : pm.starts[i + 1]], count=h * w)
        return bits.view(np.bool_).reshape(h, w)

    def segment(self, i: int) -> Segment:
        """What ``add()`` would have made for entry ``i``."""
        box = tuple(self.bboxes[i].tolist())
        return Segment.from_added(self.first_key + i, box, int(self.areas[i]), self.mask(i))  # type: ignore[arg-type]

    def segments(self) -> list[Segment]:
        return [self.segment(i) for i in range(len(self))]

    def __repr__(self) -> str:
        return f"<AddedColumns keys {self.first_key}..{self.first_key + len(self) - 1}>"


def popcounts(pm: PackedMasks) -> np.ndarray:
    """Set pixels of each mask of ``pm`` (int64), from its packed stream:
    bits counted 64 at a time, summed per mask, and each mask's start
    corrected for the bytes of its first word before it.

    The stream is read in place as words (its last partial word apart):
    a copy, or a prefix sum over every word, would write fresh memory
    the size of the stream, which costs more than the counting."""
    starts = pm.starts
    nbytes = int(starts[-1])
    if not hasattr(np, "bitwise_count"):  # numpy < 2
        table = _POPCOUNT[pm.packed[:nbytes]].astype(np.int64)
        prefix = exclusive_cumsum(table)
        return prefix[starts[1:]] - prefix[starts[:-1]]
    k = nbytes // 8
    body = np.frombuffer(pm.packed, dtype="<u8", count=k)
    tail = np.zeros(1, dtype="<u8")  # word k: the last bytes, zero-padded
    tail.view(np.uint8)[: nbytes - 8 * k] = np.frombuffer(pm.packed, dtype=np.uint8, count=nbytes)[8 * k :]
    counts = np.concatenate([np.bitwise_count(body), np.bitwise_count(tail)])
    # Mask i covers words at[i] .. at[i + 1] (the last partly): the bits of
    # words at[i] .. at[i + 1] - 1 (np.add.reduceat gives one word's count for
    # an empty range: those are zeroed), plus the bytes of word at[i + 1]
    # before its end, less the bytes of word at[i] before its start.
    at = starts >> 3
    words_of = np.add.reduceat(counts, at, dtype=np.int64)[:-1]
    words_of[at[1:] == at[:-1]] = 0
    first = np.where(at < k, body[np.minimum(at, max(k - 1, 0))] if k else tail[0], tail[0])
    before = np.bitwise_count(first & _LOW_BYTES[starts & 7]).astype(np.int64)
    return words_of + before[1:] - before[:-1]


#: The low ``k`` bytes of a little-endian 64-bit word set, for k = 0..7.
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)], dtype="<u8")


Check = Callable[[Any, Any, Any, Any, Any], Entry]

_NDIM = operator.attrgetter("ndim")
_DTYPE = operator.attrgetter("dtype")
_SIZE = operator.attrgetter("size")


def prepare(
    first_key: int,
    addresses: Sequence[Any],
    domains: Any,
    bboxes: Any,
    masks: Sequence[Any],
    groups: Any,
    max_coord: int,
    check: Check,
) -> tuple[AddedColumns, dict[str, np.ndarray]]:
    """Check and convert :meth:`IIDFile.add_many`'s arguments.

    Returns the columns of the new entries and, per group name in order of
    first use, the keys joining it.  ``check(address, domain, bbox, mask,
    group)`` is ``add()`` on a scratch file: items not of the common types
    go through it, and its error, with the item's index, is raised for the
    first item it refuses.
    """
    from .codecs.packbits import pack_masks  # not at import: importing iidschema loads no codec

    masks = list(masks)  # ours: converted items replace the caller's
    n = len(masks)
    addresses = list(addresses)
    if len(addresses) != n:
        raise ValueError(f"add_many: {len(addresses)} addresses for {n} masks")
    per_domain = _per_item(domains, n, "domains", single=lambda d: d is None or isinstance(d, (bytes, bytearray, memoryview, str)))
    per_group = _per_item(groups, n, "groups", single=lambda g: g is None or isinstance(g, (str, bytes, bytearray, int, np.integer)))
    if per_group is None and groups is not None and not isinstance(groups, str):
        raise TypeError(f"group names are str, got {groups!r}")
    box_items, boxes, box_ok = _bboxes(bboxes, n, max_coord)

    # Which items take the fast path (common types, checked here in bulk);
    # the others are checked, and converted, by add() itself.
    slow = ~box_ok
    if n and set(map(type, addresses)) != {bytes}:
        slow |= np.fromiter((type(a) is not bytes for a in addresses), np.bool_, n)
    if per_domain is not None and n and not set(map(type, per_domain)) <= {bytes, type(None)}:
        slow |= np.fromiter((d is not None and type(d) is not bytes for d in per_domain), np.bool_, n)
    if per_group is not None and n and not set(map(type, per_group)) <= {str, type(None)}:
        slow |= np.fromiter((g is not None and type(g) is not str for g in per_group), np.bool_, n)
    if n and not (
        set(map(type, masks)) == {np.ndarray}
        and set(map(_NDIM, masks)) == {2}
        and set(map(_DTYPE, masks)) == {np.dtype(np.bool_)}
    ):
        slow |= np.fromiter((type(m) is not np.ndarray or m.ndim != 2 or m.dtype != np.bool_ for m in masks), np.bool_, n)
    # The shapes of 2-D arrays, from len() and size (cheaper than .shape):
    # rows, and size / rows columns; a mask without rows is checked by add().
    shapes = boxes[:, 2:] - boxes[:, :2]
    fast = np.flatnonzero(~slow)
    if fast.size:
        got = masks if fast.size == n else [masks[i] for i in fast.tolist()]
        rows = np.fromiter(map(len, got), np.int64, fast.size)
        size = np.fromiter(map(_SIZE, got), np.int64, fast.size)
        want = shapes[fast]
        slow[fast[(rows != want[:, 0]) | (size != want[:, 0] * want[:, 1]) | (rows == 0)]] = True

    # Items for add(): the first it refuses is reported; the others come
    # back converted (bytes, a tuple bbox, a C-contiguous bool mask).
    domain_list = _domains(domains, per_domain, n)
    for i in np.flatnonzero(slow).tolist():
        group = groups if per_group is None else per_group[i]
        if group is not None and not isinstance(group, (str, bytes, bytearray, int, np.integer)):
            group = list(group)  # a one-shot iterable must survive the check
            per_group[i] = group  # type: ignore[index]
        domain = domains if per_domain is None else per_domain[i]
        try:
            entry = check(addresses[i], domain, box_items[i], masks[i], group)
        except (TypeError, ValueError) as exc:
            try:
                error = type(exc)(f"add_many item {i}: {exc}")
            except Exception:  # pragma: no cover - an exception type with another signature
                error = ValueError(f"add_many item {i}: {exc}")
            raise error from None
        addresses[i] = entry.iid.address
        domain_list[i] = entry.iid.domain
        boxes[i] = entry.seg.bbox
        masks[i] = entry.seg.source
        shapes[i] = entry.seg.source.shape

    group_keys = _group_keys(first_key, per_group, groups, n)
    try:
        pm = pack_masks(masks, shapes)
    except (TypeError, BufferError):  # masks that are not C-contiguous
        pm = pack_masks([np.ascontiguousarray(m) for m in masks], shapes)
    boxes.flags.writeable = False
    areas = popcounts(pm)
    areas.flags.writeable = False
    return AddedColumns(first_key, addresses, domain_list, boxes, areas, pm), group_keys


def _per_item(value: Any, n: int, what: str, single: Callable[[Any], bool]) -> list[Any] | None:
    """None when ``value`` is one value for every item, else its items (a list of n)."""
    if single(value):
        return None
    items = list(value)
    if len(items) != n:
        raise ValueError(f"add_many: {len(items)} {what} for {n} masks")
    return items


def _domains(domains: Any, per_domain: list[Any] | None, n: int) -> list[bytes]:
    if per_domain is None:
        if domains is None:
            return [b""] * n
        if type(domains) is not bytes:
            if not isinstance(domains, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"domain must be bytes, got {type(domains).__name__} ({domains!r:.40}); encode strings first, e.g. 'x'.encode()"
                )
            domains = bytes(domains)
        return [domains] * n
    return [b"" if d is None else d for d in per_domain]


def _bboxes(bboxes: Any, n: int, max_coord: int) -> tuple[Sequence[Any], np.ndarray, np.ndarray]:
    """``bboxes`` item by item (for add()), as an (n, 4) int64 array, and
    which rows passed add()'s checks here (rows that did not are left to
    add(), which says why they fail)."""
    items = bboxes if isinstance(bboxes, (np.ndarray, list, tuple)) else list(bboxes)
    if len(items) != n:
        raise ValueError(f"add_many: {len(items)} bboxes for {n} masks")
    ok = np.zeros(n, dtype=np.bool_)
    out = np.zeros((n, 4), dtype=np.int64)
    ints = None
    if isinstance(items, (list, tuple)) and n:
        # The common case, 4-tuples of plain ints: read straight into int64.
        try:
            plain = set(map(len, items)) == {4} and set(map(type, itertools.chain.from_iterable(items))) == {int}
            if plain:
                ints = np.fromiter(itertools.chain.from_iterable(items), np.int64, 4 * n).reshape(n, 4)
        except (TypeError, OverflowError):  # rows without a length; ints beyond int64
            ints = None
    if ints is None:
        try:
            arr = np.asarray(items)
        except (TypeError, ValueError):  # ragged, or values numpy cannot hold
            return items, out, ok
        if arr.dtype.kind not in "iu" or arr.shape != (n, 4):
            return items, out, ok  # floats, bools, objects: add() decides
        ints = arr.astype(np.int64)  # uint64 above 2**63 turns negative: refused below
    else:
        arr = None
    r0, c0, r1, c1 = ints.T
    ok = (r0 >= 0) & (c0 >= 0) & (r0 <= r1) & (c0 <= c1) & (r1 <= max_coord) & (c1 <= max_coord)
    if arr is not None and not isinstance(items, np.ndarray) and n:
        # numpy turns True into 1, add() refuses bools: rows holding one (or
        # anything but an int) go to add().
        kinds = set(map(type, itertools.chain.from_iterable(items)))
        if not all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_)) for k in kinds):
            plain = np.fromiter(
                (all(type(v) is int or (isinstance(v, np.integer)) for v in row) for row in items), np.bool_, n
            )
            ok &= plain
    if ok.all():
        return items, ints, ok
    out[ok] = ints[ok]
    return items, out, ok


def _group_keys(first_key: int, per_group: list[Any] | None, groups: Any, n: int) -> dict[str, np.ndarray]:
    """Keys per group name, names in order of first use (as an add() loop creates them)."""
    if per_group is None:
        return {} if groups is None or not n else {groups: np.arange(first_key, first_key + n, dtype=np.int64)}
    try:
        names = dict.fromkeys(per_group)
    except TypeError:  # lists of names
        names = None
    if names is not None and all(type(g) is str or g is None for g in names):
        codes = {g: i for i, g in enumerate(names)}
        order = list(names)
        code = np.fromiter(map(codes.__getitem__, per_group), np.int64, n)
        out = {}
        if len(order) <= 16:  # a few names: one comparison each
            for c, name in enumerate(order):
                if name is not None:
                    out[name] = np.flatnonzero(code == c) + first_key
            return out
        ranked = np.argsort(code, kind="stable")
        bounds = exclusive_cumsum(np.bincount(code, minlength=len(order)))
        for c, name in enumerate(order):
            if name is not None:
                out[name] = ranked[bounds[c] : bounds[c + 1]] + first_key
        return out
    keys: dict[str, list[int]] = {}
    for i, g in enumerate(per_group):
        if g is None:
            continue
        for name in (g,) if isinstance(g, str) else g:
            keys.setdefault(name, []).append(first_key + i)
    return {name: np.asarray(k, dtype=np.int64) for name, k in keys.items()}
