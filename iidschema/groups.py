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
    """

    def __init__(self, owner: "IIDFile"):
        self._owner = owner
        self._data: dict[str, np.ndarray] | None = None
        # Keys added since the last merge, per group: add() appends here so
        # that adding N entries one by one stays O(N), not O(N^2).
        self._pending: dict[str, list[int]] = {}

    def _groups(self) -> dict[str, np.ndarray]:
        if self._data is None:
            reader = self._owner._reader
            self._data = {name: sorted_unique(keys) for name, keys in reader.groups().items()} if reader else {}
        if self._pending:
            for name, keys in self._pending.items():
                self._data[name] = np.union1d(self._data.get(name, np.zeros(0, np.int64)), np.asarray(keys, dtype=np.int64))
            self._pending = {}
        return self._data

    def list(self) -> list[str]:
        """Group names, sorted (as iidfile 0.2.0)."""
        return sorted(self._groups())

    def keys(self, name: str) -> np.ndarray:
        """The sorted keys of group ``name``."""
        groups = self._groups()
        if name not in groups:
            known = ", ".join(repr(n) for n in sorted(groups)) or "none"
            raise KeyError(f"no group {name!r} in this file (groups: {known})")
        keys = groups[name]
        keys.flags.writeable = False  # shared with the file: callers must not change it
        return keys

    def add(self, name: str, keys: Iterable[int] | None = None) -> None:
        """Create group ``name`` (if needed) and add ``keys`` to it.

        An empty group is allowed and can be saved (iidfile 0.2.0 crashed).
        """
        if not isinstance(name, str):
            raise TypeError(f"group names are str, got {name!r}")
        new = [self._owner._check_key(k) for k in (keys if keys is not None else [])]
        if self._data is not None and name not in self._data and name not in self._pending:
            self._data[name] = np.zeros(0, np.int64)  # keeps creation order
        self._pending.setdefault(name, []).extend(new)

    def get(self, groups: str | Iterable[str], keys_only: bool = False, iids: bool = True, segs: bool = False) -> "list[Entry] | set[int]":
        """Entries of ``groups`` (or their keys with ``keys_only``), as in iidfile 0.2.0."""
        keys = self._owner._group_keys(groups)
        if keys_only:
            return set(keys.tolist())
        return self._owner.fetch(keys=keys.tolist(), iids=iids, segs=segs)

    def as_dict(self) -> dict[str, np.ndarray]:
        """Every group, in table order (read-only arrays)."""
        return {name: self.keys(name) for name in self._groups()}

    def __contains__(self, name: object) -> bool:
        return name in self._groups()

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups())

    def __len__(self) -> int:
        return len(self._groups())

    def __repr__(self) -> str:
        items = [f"{n!r}: {len(k)} keys" for n, k in self._groups().items()]
        more = f", ... {len(items) - 8} more" if len(items) > 8 else ""
        return "Groups(" + ", ".join(items[:8]) + more + ")"


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
