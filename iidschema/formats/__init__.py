"""Reading and writing other file formats through reader/writer plugins.

>>> from iidschema.formats import read, write, formats
>>> f = read("photo.iid")                          # doctest: +SKIP  (an IIDFile, opened lazily)
>>> write(f, "photo.json")                         # doctest: +SKIP  (COCO, by extension)
>>> write(f, "labels.png", overlap="first")        # doctest: +SKIP  (writer options)
>>> images = read("dataset.json")                  # doctest: +SKIP  (COCO: a list, one IIDFile per image)
>>> [x["name"] for x in formats()]                 # doctest: +SKIP
>>> import iidschema; iidschema.formats() == formats()   # doctest: +SKIP  (the package is callable too)

Built-in formats (plugin ``builtin_formats``): ``iid``, ``coco``,
``png-labels``, ``png-masks``, ``medmask``, ``medmask-archive``; see
docs/FORMATS.md for what each keeps, their options, the reader order and
its configuration file, and how to write a format plugin.
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import Any as _Any

from .registry import (
    DeclaredFormat,
    FormatSpec,
    IIDNoReaderError,
    IIDOptionError,
    Option,
    formats,
    get_registry,
    read,
    write,
)

__all__ = [
    "read",
    "write",
    "formats",
    "FormatSpec",
    "Option",
    "DeclaredFormat",
    "IIDOptionError",
    "IIDNoReaderError",
    "get_registry",
]


class _FormatsModule(_types.ModuleType):
    """Lets ``iidschema.formats()`` list the formats while
    ``iidschema.formats`` stays this package (``iidschema.formats.read``...)."""

    def __call__(self, pm: _Any = None) -> list[dict[str, _Any]]:
        return formats(pm)


_sys.modules[__name__].__class__ = _FormatsModule
