"""The library's exception hierarchy.

Every problem found in a file is reported as an :class:`IIDFormatError` (a
``ValueError``) that says *where* it went wrong: the section of the file and
the absolute byte offset.  Callers can therefore catch one type for "this
file is bad" and still show a precise message, and nothing from the
implementation (``struct.error``, ``IndexError``, construct internals) leaks.
"""

from __future__ import annotations

__all__ = [
    "IIDError",
    "IIDFormatError",
    "IIDVersionError",
    "IIDChecksumError",
    "IIDCodecError",
    "IIDLimitError",
    "IIDPluginError",
]


class IIDError(Exception):
    """Base class of every error raised by iidschema."""


class IIDFormatError(IIDError, ValueError):
    """A file (or buffer) does not follow the ``.iid`` format.

    :param message: what is wrong, in one sentence.
    :param section: the part of the file being read (``"header"``, ``"lut"``,
        ``"iids"``, ``"meta"``, ``"groups"``, ``"segs"``, ...), if known.
    :param offset: the absolute byte offset in the file where the problem
        was found, if known.
    """

    def __init__(self, message: str, *, section: str | None = None, offset: int | None = None):
        self.message = message
        self.section = section
        self.offset = offset
        where = []
        if section is not None:
            where.append(f"section {section!r}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        full = f"{message} ({', '.join(where)})" if where else message
        super().__init__(full)


class IIDVersionError(IIDFormatError):
    """The header names a format version this library cannot read."""

    def __init__(self, found: int, supported: tuple[int, ...], *, offset: int = 0):
        self.found = found
        self.supported = tuple(supported)
        super().__init__(
            f"unsupported .iid format version {found}; supported versions: "
            + ", ".join(str(v) for v in self.supported),
            section="header",
            offset=offset,
        )


class IIDChecksumError(IIDFormatError):
    """Stored and computed checksums disagree: the named part is damaged."""


class IIDCodecError(IIDFormatError):
    """A mask codec is unknown, or a buffer does not decode to its region."""


class IIDLimitError(IIDError, ValueError):
    """A value does not fit the field widths of the format version asked for
    (for instance a coordinate above 65535 in version 0)."""


class IIDPluginError(IIDError):
    """A plugin is misdeclared or conflicts with another (same codec id or name)."""
