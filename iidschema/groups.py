"""Groups (named key sets) and metadata of an :class:`~iidschema.IIDFile`.

Both are read from the file only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from .masks import sorted_unique

if TYPE_CHECKING:  # pragma: no cover
    from .iidfile import IIDFile
    from .model import Entry

__all__ = ["Groups", "Metadata"]


class Groups:
    """Named sets of entry keys.

    Names keep the order in which groups were created (or read); keys are
    held sorted and unique, and are written in ascending order.

    Reading is lazy per group: names (``list()``, ``in``, ``len``,
    iteration) need only the file's group table; ``keys(name)`` reads that
    one group's keys (then keeps them); ``as_dict()`` reads every group.
    """

    def __init__(self, owner: "IIDFile"):
        self._owner = owner
        # Every name, in creation order (the file's table first); None until
        # first needed, so that add() never reads the file.
        self._order: dict[str, None] | None = None
        # name -> (offset, key count) of the groups stored in the file.
        self._heads: dict[str, tuple[int, int]] = {}
        # Keys of the groups read (or built) so far, merged with additions:
        # sorted, unique, read-only.
        self._keys: dict[str, np.ndarray] = {}
        # Keys added since the last merge, per group: add() appends here so
        # that adding N entries one by one stays O(N), not O(N^2).
        self._pending: dict[str, list[int]] = {}

    def _names(self) -> dict[str, None]:
        """Every group name in creation order (reads the file's table once)."""
        order = self._order
        if order is None:
            reader = self._owner._reader
            self._heads = reader.group_table() if reader is not None else {}
            order = dict.fromkeys(self._heads)
            order.update(dict.fromkeys(self._pending))
            self._order = order
        return order

    def list(self) -> list[str]:
        """Group names, sorted (as iidfile 0.2.0)."""
        return sorted(self._names())

    def keys(self, name: str) -> np.ndarray:
        """The sorted keys of group ``name`` (read from the file on first use)."""
        keys = self._keys.get(name)
        if keys is not None and not self._pending.get(name):
            return keys
        names = self._names()
        if name not in names:
            known = ", ".join(repr(n) for n in sorted(names)) or "none"
            raise KeyError(f"no group {name!r} in this file (groups: {known})")
        if keys is None:
            if name in self._heads:
                reader = self._owner._reader
                assert reader is not None
                keys = sorted_unique(reader.group_keys(name))
            else:
                keys = np.zeros(0, np.int64)
        pending = self._pending.pop(name, None)
        if pending:
            keys = _merge(keys, pending)
        keys.flags.writeable = False  # shared with the file: callers must not change it
        self._keys[name] = keys
        return keys

    def add(self, name: str, keys: Iterable[int] | None = None) -> None:
        """Create group ``name`` (if needed) and add ``keys`` to it.

        An empty group is allowed and can be saved (iidfile 0.2.0 crashed).
        Cheap per call: keys are only validated and queued here, and merged
        into the group when it is next read.
        """
        if type(name) is not str and not isinstance(name, str):
            raise TypeError(f"group names are str, got {name!r}")
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = []
            if self._order is not None and name not in self._order:
                self._order[name] = None  # keeps creation order
        if keys is None:
            return
        if type(keys) is list and len(keys) == 1:
            # One key (IIDFile.add): an int in range needs no further check.
            key = keys[0]
            if type(key) is int and 0 <= key < self._owner._count:
                pending.append(key)
                return
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
            if keys.size and (int(keys.min()) < 0 or int(keys.max()) >= self._owner._count):
                bad = int(keys.min()) if int(keys.min()) < 0 else int(keys.max())
                self._owner._check_key(bad)  # raises, naming the key
            pending.extend(keys.reshape(-1).tolist())
            return
        check = self._owner._check_key
        pending.extend([check(k) for k in keys])

    def _append(self, name: str, key: int) -> None:
        """``add(name, [key])`` for a key :meth:`IIDFile.add` has just made
        (known valid; ``name`` already checked): one list append."""
        pending = self._pending.get(name)
        if pending is None:
            self.add(name)
            pending = self._pending[name]
        pending.append(key)

    def get(self, groups: str | Iterable[str], keys_only: bool = False, iids: bool = True, segs: bool = False) -> "list[Entry] | set[int]":
        """Entries of ``groups`` (or their keys with ``keys_only``), as in iidfile 0.2.0."""
        keys = self._owner._group_keys(groups)
        if keys_only:
            return set(keys.tolist())
        return self._owner.fetch(keys=keys.tolist(), iids=iids, segs=segs)

    def as_dict(self) -> dict[str, np.ndarray]:
        """Every group, in table order (read-only arrays); reads every group."""
        return {name: self.keys(name) for name in list(self._names())}

    def __contains__(self, name: object) -> bool:
        return name in self._pending or name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names()))

    def __len__(self) -> int:
        return len(self._names())

    def _size(self, name: str) -> int:
        """Number of keys of ``name``, for ``repr`` only: exact for a group
        already read; for one not read yet (not read for a repr) its stored
        count plus the keys added since."""
        if name in self._keys:
            return len(self.keys(name))
        return self._heads.get(name, (0, 0))[1] + len(self._pending.get(name, ()))

    def __repr__(self) -> str:
        names = list(self._names())
        items = [f"{n!r}: {self._size(n)} keys" for n in names[:8]]
        more = f", ... {len(names) - 8} more" if len(names) > 8 else ""
        return "Groups(" + ", ".join(items) + more + ")"


def _merge(keys: np.ndarray, added: list[int]) -> np.ndarray:
    """``keys`` (sorted, unique) with ``added`` merged in, sorted and unique.

    Sorts only the added keys (O(n + m log m)); keys added by
    :meth:`IIDFile.add` are ascending and above every stored key, which
    costs one concatenation."""
    new = np.asarray(added, dtype=np.int64)
    if new.size > 1 and not bool((new[1:] > new[:-1]).all()):
        new = np.sort(new)
        new = new[np.concatenate(([True], new[1:] != new[:-1]))]
    if not keys.size or int(new[0]) > int(keys[-1]):
        return np.concatenate([keys, new])
    at = np.searchsorted(keys, new)
    fresh = keys[np.minimum(at, keys.size - 1)] != new
    return np.insert(keys, at[fresh], new[fresh])


class Metadata:
    """The file's JSON metadata; ``.data`` is read on first access."""

    _UNSET = object()

    def __init__(self, owner: "IIDFile"):
        self._owner = owner
        self._data: Any = self._UNSET

    @property
    def data(self) -> Any:
        if self._data is self._UNSET:
            reader = self._owner._reader
            self._data = reader.meta() if reader is not None else {}
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value

    def __repr__(self) -> str:
        return f"Metadata({self.data!r})"
