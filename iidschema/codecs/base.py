"""The mask codec interface, the cheap codec declaration, and input guards.

A *codec* turns one region mask (a 2-D boolean array, row-major) into bytes
and back.  Its ``id`` is written into files (uint16), so it must never change
once published; its ``name`` is for people and for the API.

A *declaration* (:class:`CodecSpec`) is what plugins hand to the plugin
manager.  It only names where the codec lives, so that listing codecs (the
``iidschema plugins`` command, error messages) never imports a codec's
dependencies; the codec object is built on first use, the way numcodecs
resolves codecs by id.

The guards (:func:`check_shape`, :func:`as_mask`) are shared by every codec
because decoding is the attack surface: a payload comes from an untrusted
file, and a decoder must never produce (or allocate) more than the ``h*w``
pixels its region declares.
"""

from __future__ import annotations

import abc
import importlib
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from .. import masks as _masks
from ..errors import IIDCodecError, IIDPluginError

__all__ = [
    "MaskCodec",
    "MaskCodecLike",
    "CodecSpec",
    "ID_MIN",
    "ID_MAX",
    "BUILTIN_ID_RANGE",
    "THIRD_PARTY_ID_RANGE",
    "PRIVATE_ID_RANGE",
    "check_shape",
    "as_mask",
    "packed_size",
    "load_object",
    "encode_many",
    "decode_many",
]

# The largest mask a decoder produces is the library's one limit,
# ``iidschema.masks.MAX_MASK_PIXELS`` (read at call time, so raising it there
# raises it here).  A bound on the shape is what bounds decoding, since a few
# bytes of a valid payload may describe that many pixels.

#: Codec ids are stored as uint16.
ID_MIN = 0
ID_MAX = 0xFFFF
#: Reserved for the codecs shipped with iidschema.
BUILTIN_ID_RANGE = range(0, 128)
#: Claimed by third-party plugins through the registry table in docs/CODECS.md.
THIRD_PARTY_ID_RANGE = range(128, 32768)
#: Private / experimental: never in published files.
PRIVATE_ID_RANGE = range(32768, 65536)


@runtime_checkable
class MaskCodecLike(Protocol):
    """What the library needs from a codec (duck-typed; see :class:`MaskCodec`)."""

    id: int
    name: str

    def encode(self, mask: np.ndarray) -> bytes: ...

    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray: ...


class MaskCodec(abc.ABC):
    """Base class for mask codecs (subclassing it is optional but convenient).

    Contract, which every codec must honour because files are untrusted:

    * ``encode(mask)`` accepts any 2-D array convertible to bool (non-zero is
      True) and encodes it in C (row-major) order.
    * ``decode(buffer, shape)`` returns a C-contiguous 2-D ``bool`` array of
      exactly ``shape``.  It must be *bounded*: never allocate more than about
      ``h*w`` pixels whatever the buffer claims, and raise
      :class:`~iidschema.errors.IIDCodecError` for a malformed buffer or one
      that decodes to a different number of pixels.
    """

    #: Stable identifier written into files (uint16); see docs/CODECS.md.
    id: int
    #: Short unique name (lookups are case-insensitive).
    name: str
    #: One line for ``iidschema plugins``.
    description: str = ""

    @abc.abstractmethod
    def encode(self, mask: np.ndarray) -> bytes:
        """Encode a 2-D boolean mask (row-major) into bytes."""

    @abc.abstractmethod
    def decode(self, buffer: bytes | memoryview, shape: tuple[int, int]) -> np.ndarray:
        """Decode ``buffer`` into a 2-D bool array of exactly ``shape`` (bounded)."""

    def encode_many(self, masks: Sequence[Any]) -> list[bytes]:
        """``[encode(m) for m in masks]``; codecs override it when they can
        encode many masks faster than one at a time (the built-ins do)."""
        return [bytes(self.encode(m)) for m in masks]

    def decode_many(self, buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """``[decode(b, s) for b, s in zip(buffers, shapes)]``, with the same checks."""
        if len(buffers) != len(shapes):
            raise IIDCodecError(f"decode_many needs one shape per buffer: {len(buffers)} buffers, {len(shapes)} shapes")
        return [self.decode(b, s) for b, s in zip(buffers, shapes)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} codec {self.name!r} id={self.id}>"


# Codecs are duck-typed (MaskCodecLike): a third-party codec need not have
# the bulk methods, so the library calls them through these two functions.


def encode_many(codec: Any, masks: Sequence[Any]) -> list[bytes]:
    """Encode ``masks`` with ``codec``: its ``encode_many`` when it has one,
    else one ``encode`` call per mask.  Always returns a list of ``bytes``."""
    bulk = getattr(codec, "encode_many", None)
    if bulk is None:
        return [bytes(codec.encode(m)) for m in masks]
    out = bulk(masks)
    if len(out) != len(masks):
        raise IIDCodecError(f"codec {codec!r}: encode_many returned {len(out)} payloads for {len(masks)} masks")
    return [p if type(p) is bytes else bytes(p) for p in out]


def decode_many(codec: Any, buffers: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Decode ``buffers`` (one shape each) with ``codec``: its ``decode_many``
    when it has one, else one ``decode`` call per buffer."""
    if len(buffers) != len(shapes):
        raise IIDCodecError(f"decode_many needs one shape per buffer: {len(buffers)} buffers, {len(shapes)} shapes")
    bulk = getattr(codec, "decode_many", None)
    if bulk is None:
        return [codec.decode(b, s) for b, s in zip(buffers, shapes)]
    return bulk(buffers, shapes)


Loader = Union[str, Callable[[], Any]]


@dataclass(frozen=True)
class CodecSpec:
    """A cheap, import-free declaration of a codec.

    :param id: the uint16 written into files.
    :param name: the unique name.
    :param loader: ``"package.module:attr"`` (imported on first use; ``attr``
        may be a class, called with no arguments, or a ready instance) or a
        zero-argument callable returning the codec.
    :param description: one line for listings.
    """

    id: int
    name: str
    loader: Loader = field(compare=False)
    description: str = ""

    def __post_init__(self) -> None:
        # A misdeclared codec is the plugin author's bug: say so precisely.
        if isinstance(self.id, (bool, np.bool_)):
            raise IIDPluginError(f"codec id must be an int, got {self.id!r}")
        try:
            object.__setattr__(self, "id", operator.index(self.id))
        except TypeError:
            raise IIDPluginError(f"codec id must be an int, got {self.id!r}") from None
        if not ID_MIN <= self.id <= ID_MAX:
            raise IIDPluginError(f"codec id {self.id} does not fit uint16 ({ID_MIN}..{ID_MAX})")
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise IIDPluginError(f"codec name must be a non-empty string without surrounding blanks, got {self.name!r}")
        if self.name.lower() == "auto":
            raise IIDPluginError("codec name 'auto' is reserved (it means: pick the smallest encoding)")
        if isinstance(self.loader, str):
            if ":" not in self.loader:
                raise IIDPluginError(f"codec loader string must look like 'module:attr', got {self.loader!r}")
        elif not callable(self.loader):
            raise IIDPluginError(f"codec loader must be 'module:attr' or a callable, got {self.loader!r}")
        if not isinstance(self.description, str):
            object.__setattr__(self, "description", str(self.description))

    @property
    def loader_text(self) -> str:
        """The loader as text (for reports and messages)."""
        if isinstance(self.loader, str):
            return self.loader
        text = getattr(self.loader, "loader_text", None)
        if isinstance(text, str):
            return text
        mod = getattr(self.loader, "__module__", None) or "?"
        qual = getattr(self.loader, "__qualname__", None) or type(self.loader).__qualname__
        return f"{mod}:{qual}"

    def load(self) -> Any:
        """Import / call the loader and return the codec object (no caching here).

        A loader string may name a codec instance, a codec class (called with
        no arguments) or a factory function; a callable loader is called.
        """
        target = load_object(self.loader) if isinstance(self.loader, str) else self.loader
        if isinstance(target, type) or (callable(target) and not _has_codec_methods(target)):
            target = target()
        if isinstance(target, type):  # a factory that returned a class
            target = target()
        return target


def _has_codec_methods(obj: Any) -> bool:
    return hasattr(obj, "encode") and hasattr(obj, "decode")


def load_object(reference: str) -> Any:
    """Resolve ``"package.module:attr.sub"`` to the object it names."""
    module_name, _, attr = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def check_shape(shape: Any) -> tuple[int, int]:
    """Validate a decode shape: exactly two non-negative ints.

    Decoders size their output from ``shape``, so a negative, fractional or
    absurd shape must be refused before anything is allocated.
    """
    try:
        h, w = shape
    except (TypeError, ValueError):
        raise IIDCodecError(f"mask shape must be (height, width), got {shape!r}") from None
    limit = _masks.MAX_MASK_PIXELS
    if type(h) is int and type(w) is int and h >= 0 and w >= 0 and h * w <= limit:
        return h, w  # the common case, fast
    out = []
    for v in (h, w):
        if isinstance(v, (bool, np.bool_)):
            raise IIDCodecError(f"mask shape must hold ints, got {shape!r}")
        try:
            v = operator.index(v)
        except TypeError:
            raise IIDCodecError(f"mask shape must hold ints, got {shape!r}") from None
        if v < 0:
            raise IIDCodecError(f"mask shape must be non-negative, got {shape!r}")
        out.append(v)
    if out[0] * out[1] > limit:
        raise IIDCodecError(f"a {out[0]}x{out[1]} mask exceeds iidschema.masks.MAX_MASK_PIXELS ({limit})")
    return out[0], out[1]


def as_mask(mask: Any) -> np.ndarray:
    """The mask as a 2-D bool array (non-zero is True); rejects other ranks."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise IIDCodecError(f"a mask must be 2-D, got an array of shape {m.shape}")
    if m.dtype != np.bool_:
        m = m.astype(np.bool_)
    return m


def packed_size(npixels: int) -> int:
    """Bytes of a packbits payload of ``npixels`` bits: ``ceil(npixels / 8)``."""
    return (npixels + 7) // 8
