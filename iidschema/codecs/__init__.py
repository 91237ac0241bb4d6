"""Mask codecs: look-up by id or name, automatic choice, and the registry.

Codecs come from plugins (hook ``iidschema_codecs``), the built-ins included.
The registry built from the hooks holds only *declarations*
(:class:`~iidschema.codecs.base.CodecSpec`); a codec object is created the
first time it is asked for and then kept, so listing codecs never imports
their dependencies.  The registry is rebuilt whenever a plugin is registered
or unregistered (the manager's ``generation`` changes).

>>> from iidschema.codecs import get_codec, encode_auto
>>> codec = get_codec("rle")                      # or get_codec(1)
>>> codec_id, payload = encode_auto(mask)         # doctest: +SKIP
>>> get_codec(codec_id).decode(payload, mask.shape)  # doctest: +SKIP
"""

from __future__ import annotations

import operator
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from ..errors import IIDCodecError, IIDPluginError
from ..plugins.manager import BUILTIN_MODULE, IIDPluginManager, call_each, describe_plugin, get_plugin_manager
from .base import (
    BUILTIN_ID_RANGE,
    PRIVATE_ID_RANGE,
    THIRD_PARTY_ID_RANGE,
    CodecSpec,
    MaskCodec,
    MaskCodecLike,
    as_mask,
    decode_many,
    encode_many,
)

__all__ = [
    "CodecSpec",
    "MaskCodec",
    "MaskCodecLike",
    "CodecLike",
    "DeclaredCodec",
    "get_codec",
    "available_codecs",
    "declared_codecs",
    "encode_auto",
    "resolve_codec",
    "encoder_for",
    "encode_auto_many",
    "encoder_many_for",
    "BulkEncoder",
    "encode_many",
    "decode_many",
    "builtin_codec_ids",
    "check_plugin_codecs",
]

#: What the API accepts where a codec is meant: an id, a name, a codec
#: object, or ``"auto"`` (where allowed).
CodecLike = Union[int, str, MaskCodecLike]


@dataclass(frozen=True)
class DeclaredCodec:
    """A codec declaration together with the plugin that made it."""

    spec: CodecSpec
    plugin_name: str
    builtin: bool

    def where(self) -> str:
        return f"{self.spec.name!r} (id {self.spec.id}) of plugin {self.plugin_name!r}"


@dataclass
class _Registry:
    pm: IIDPluginManager
    generation: int
    by_id: dict[int, DeclaredCodec]
    by_name: dict[str, DeclaredCodec]
    instances: dict[int, Any] = field(default_factory=dict)
    load_errors: dict[int, IIDCodecError] = field(default_factory=dict)


class _Ready:
    """Loader of a codec object a hook returned ready-made (or its class)."""

    def __init__(self, obj: Any):
        self.obj = obj
        self.loader_text = describe_plugin(obj)

    def __call__(self) -> Any:
        return self.obj() if isinstance(self.obj, type) else self.obj


def _looks_like_codec(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("id", "name", "encode", "decode"))


def _as_specs(result: Any, plugin_name: str) -> list[CodecSpec]:
    """Normalise what an ``iidschema_codecs`` implementation returned."""
    if result is None:
        return []
    if isinstance(result, CodecSpec) or _looks_like_codec(result):
        result = [result]
    try:
        items = list(result)
    except TypeError:
        raise IIDPluginError(
            f"plugin {plugin_name!r}: iidschema_codecs() must return a list, got {type(result).__name__}"
        ) from None
    specs = []
    for item in items:
        if isinstance(item, CodecSpec):
            specs.append(item)
        elif _looks_like_codec(item):
            doc = (getattr(item, "__doc__", None) or "").strip().splitlines()
            desc = getattr(item, "description", "") or (doc[0] if doc else "")
            specs.append(CodecSpec(item.id, item.name, _Ready(item), desc))
        else:
            raise IIDPluginError(
                f"plugin {plugin_name!r}: iidschema_codecs() returned {item!r}, "
                "which is neither a CodecSpec nor a codec (id, name, encode, decode)"
            )
    return specs


def _build(pm: IIDPluginManager, *, strict_for: str | None = None) -> _Registry:
    """Collect every plugin's declarations; conflicts raise IIDPluginError.

    A plugin whose hook raises or returns junk is recorded as failed and
    skipped, except the plugin named ``strict_for`` (being registered), for
    which the error is raised so that its registration can be undone.
    """
    by_id: dict[int, DeclaredCodec] = {}
    by_name: dict[str, DeclaredCodec] = {}
    for call in call_each(pm, "iidschema_codecs"):
        value = pm.sources.get(call.plugin_name, {}).get("value") or describe_plugin(call.plugin)
        try:
            if call.error is not None:
                raise IIDPluginError(
                    f"plugin {call.plugin_name!r}: iidschema_codecs() raised "
                    f"{type(call.error).__name__}: {call.error}"
                ) from call.error
            specs = _as_specs(call.result, call.plugin_name)
        except IIDPluginError as exc:
            if call.plugin_name == strict_for:
                raise
            pm.record_failure(call.plugin_name, str(value), "hook iidschema_codecs", exc)
            continue
        builtin = getattr(call.plugin, "__name__", None) == BUILTIN_MODULE
        for spec in specs:
            new = DeclaredCodec(spec, call.plugin_name, builtin)
            old = by_id.get(spec.id)
            if old is not None:
                raise IIDPluginError(f"codec id {spec.id} is claimed twice: {old.where()} and {new.where()}")
            key = spec.name.lower()
            old = by_name.get(key)
            if old is not None:
                raise IIDPluginError(f"codec name {spec.name!r} is claimed twice: {old.where()} and {new.where()}")
            by_id[spec.id] = by_name[key] = new
    return _Registry(pm, pm.generation, by_id, by_name)


_LOCK = threading.RLock()
_CURRENT: _Registry | None = None


def _registry() -> _Registry:
    """The registry of the current manager, rebuilt when plugins changed."""
    global _CURRENT
    pm = get_plugin_manager()
    reg = _CURRENT
    if reg is None or reg.pm is not pm or reg.generation != pm.generation:
        with _LOCK:
            reg = _CURRENT
            if reg is None or reg.pm is not pm or reg.generation != pm.generation:
                reg = _CURRENT = _build(pm)
    return reg


def check_plugin_codecs(pm: IIDPluginManager, name: str) -> None:
    """Raise :class:`IIDPluginError` if plugin ``name`` misdeclares codecs or
    conflicts with another plugin (called right after registering it)."""
    _build(pm, strict_for=name)


def declared_codecs(pm: IIDPluginManager | None = None) -> list[DeclaredCodec]:
    """Every codec declaration with its plugin, by id (imports no codec)."""
    reg = _registry() if pm is None else _build(pm)
    return [reg.by_id[i] for i in sorted(reg.by_id)]


def available_codecs() -> list[CodecSpec]:
    """The declarations of all registered codecs, by id (imports no codec)."""
    return [d.spec for d in declared_codecs()]


def builtin_codec_ids() -> list[int]:
    """Ids of the codecs provided by iidschema itself (the ``encode_auto`` default)."""
    reg = _registry()
    return sorted(i for i, d in reg.by_id.items() if d.builtin)


def _unknown(what: str, reg: _Registry, ident: Any) -> IIDCodecError:
    have = ", ".join(f"{i} ({reg.by_id[i].spec.name})" for i in sorted(reg.by_id)) or "none"
    hint = "install the plugin package that provides it"
    if isinstance(ident, int):
        if ident in THIRD_PARTY_ID_RANGE:
            hint += " (third-party ids are listed in the registry table of docs/CODECS.md)"
        elif ident in PRIVATE_ID_RANGE:
            hint += " (ids 32768-65535 are private: the file was written with an experimental codec)"
        elif ident in BUILTIN_ID_RANGE:
            hint = "upgrade iidschema (ids 0-127 are its built-ins)"
    return IIDCodecError(f"unknown mask codec {what}; available codecs: {have}; {hint}")


def _instantiate(reg: _Registry, decl: DeclaredCodec) -> Any:
    spec = decl.spec
    with _LOCK:
        codec = reg.instances.get(spec.id)
        if codec is not None:
            return codec
        error = reg.load_errors.get(spec.id)
        if error is not None:
            raise error
        try:
            codec = spec.load()
        except Exception as exc:
            reg.pm.record_failure(decl.plugin_name, spec.loader_text, f"load codec {spec.name}", exc)
            error = IIDCodecError(
                f"mask codec {decl.where()} could not be loaded from {spec.loader_text}: "
                f"{type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            reg.load_errors[spec.id] = error
            raise error from exc
        if not _looks_like_codec(codec) or not callable(codec.encode) or not callable(codec.decode):
            raise IIDPluginError(f"{spec.loader_text} (codec {decl.where()}) is not a codec: {codec!r}")
        if codec.id != spec.id or str(codec.name).lower() != spec.name.lower():
            raise IIDPluginError(
                f"{spec.loader_text} declares codec {codec.name!r} id {codec.id}, "
                f"but plugin {decl.plugin_name!r} announced {spec.name!r} id {spec.id}"
            )
        reg.instances[spec.id] = codec
        return codec


def get_codec(id_or_name: int | str) -> Any:
    """The codec with this id (the uint16 in files) or name (case-insensitive).

    Raises :class:`IIDCodecError` for an unknown codec, naming it and listing
    the available ones.
    """
    reg = _registry()
    if isinstance(id_or_name, str):
        decl = reg.by_name.get(id_or_name.lower())
        if decl is None:
            raise _unknown(f"name {id_or_name!r}", reg, id_or_name)
    else:
        try:
            ident = operator.index(id_or_name)
        except TypeError:
            raise IIDCodecError(f"a codec is named by an int id or a str name, got {id_or_name!r}") from None
        decl = reg.by_id.get(ident)
        if decl is None:
            raise _unknown(f"id {ident}", reg, ident)
    codec = reg.instances.get(decl.spec.id)
    return codec if codec is not None else _instantiate(reg, decl)


def resolve_codec(codec: CodecLike) -> Any | None:
    """The codec meant by an id, a name or a codec object; ``None`` for ``"auto"``.

    ``None`` tells the caller to choose per mask with :func:`encode_auto`
    (or use :func:`encoder_for`, which does it).  A codec object is returned
    as is, after checking that it does not contradict a registered codec of
    the same id (it need not be registered: files written with it are then
    readable only where it is).
    """
    if isinstance(codec, str):
        if codec.lower() == "auto":
            return None
        return get_codec(codec)
    if _looks_like_codec(codec) and not isinstance(codec, type):
        reg = _registry()
        decl = reg.by_id.get(codec.id)
        if decl is not None and decl.spec.name.lower() != str(codec.name).lower():
            raise IIDCodecError(
                f"codec object {codec!r} uses id {codec.id}, which is registered to {decl.where()}"
            )
        return codec
    return get_codec(codec)  # an int id (or an error naming what was given)


def encode_auto(mask: Any, candidates: Iterable[CodecLike] | None = None) -> tuple[int, bytes]:
    """Encode with every candidate and keep the smallest: ``(codec_id, payload)``.

    ``candidates`` defaults to iidschema's built-in codecs (never a
    third-party one, so files stay readable without plugins).  Ties go to the
    lowest id, so the choice is deterministic.
    """
    return encoder_for("auto", None if candidates is None else list(candidates))(mask)


def encoder_for(codec: CodecLike, candidates: Sequence[CodecLike] | None = None) -> Callable[[Any], tuple[int, bytes]]:
    """A function ``mask -> (codec_id, payload)`` for a codec or ``"auto"``.

    Resolves the codec (or, for ``"auto"``, every candidate) once, for
    writers that encode many masks.
    """
    resolved = resolve_codec(codec)
    if resolved is not None:
        cid = resolved.id
        return lambda mask: (cid, bytes(resolved.encode(mask)))
    codecs = [resolve_codec(c) for c in (builtin_codec_ids() if candidates is None else candidates)]
    if not codecs or any(c is None for c in codecs):
        raise IIDCodecError("encode_auto needs at least one concrete candidate codec (not 'auto')")
    codecs.sort(key=lambda c: c.id)

    def smallest(mask: Any) -> tuple[int, bytes]:
        m = as_mask(mask)
        best_id, best = codecs[0].id, bytes(codecs[0].encode(m))
        for c in codecs[1:]:
            payload = bytes(c.encode(m))
            if len(payload) < len(best):
                best_id, best = c.id, payload
        return best_id, best

    return smallest


def _builtin_kind(codec: Any) -> str | None:
    """``"packbits"``, ``"rle"`` or ``"zstd"`` when ``codec`` is exactly an
    instance of that built-in class (whose payloads the bulk encoder can
    size or produce from the packed stream), else None.  Subclasses may
    encode differently, so they take the generic path."""
    t = type(codec)
    module = sys.modules.get(t.__module__)
    if module is None or not t.__module__.startswith(__name__ + "."):
        return None
    kinds = {"PackBitsCodec": "packbits", "RLECodec": "rle", "ZstdCodec": "zstd"}
    kind = kinds.get(t.__name__)
    return kind if kind is not None and getattr(module, t.__name__, None) is t else None


_NEVER = np.iinfo(np.int64).max

#: zstd batches at least this large are compressed in the background thread.
_BACKGROUND_MIN = 256
_EXECUTOR: Any = None
_EXECUTOR_PID = 0


def _executor() -> Any:
    """One background thread for bulk zstd compression (created on first use).

    A forked child inherits the executor but not its thread, and would wait
    forever on it: a new one is made per process.
    """
    global _EXECUTOR, _EXECUTOR_PID
    import os

    if _EXECUTOR is None or _EXECUTOR_PID != os.getpid():
        with _LOCK:
            if _EXECUTOR is None or _EXECUTOR_PID != os.getpid():
                from concurrent.futures import ThreadPoolExecutor

                _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iidschema-zstd")
                _EXECUTOR_PID = os.getpid()
    return _EXECUTOR


class BulkEncoder:
    """Encodes many masks with one codec, or with ``"auto"``, per batch.

    Built by :func:`encoder_many_for`; ``encoder(masks)`` returns
    ``[(codec_id, payload), ...]``, exactly what :func:`encoder_for` gives
    mask by mask.  The built-in codecs work from one packed stream of all
    masks (:func:`~iidschema.codecs.packbits.pack_masks`) and their runs
    (:func:`~iidschema.codecs.rle.runs_of_packed`).  For ``"auto"`` the
    packbits and rle sizes are computed, not encoded (packbits: ``ceil(h*w/8)``;
    rle: the LEB128 byte counts of the runs), zstd compresses only masks
    where it can still win (:data:`~iidschema.codecs.zstd.MIN_FRAME_BYTES`),
    and only the chosen payloads are materialised.  Other codecs are called
    through their ``encode_many`` (or ``encode`` per mask).
    """

    def __init__(self, codec: CodecLike, candidates: Sequence[CodecLike] | None = None):
        resolved = resolve_codec(codec)
        if resolved is not None:
            self.codecs = [resolved]
            self.auto = False
        else:
            codecs = [resolve_codec(c) for c in (builtin_codec_ids() if candidates is None else candidates)]
            if not codecs or any(c is None for c in codecs):
                raise IIDCodecError("encode_auto needs at least one concrete candidate codec (not 'auto')")
            codecs.sort(key=lambda c: c.id)
            self.codecs = codecs
            self.auto = True
        self.kinds = [_builtin_kind(c) for c in self.codecs]

    def __call__(self, masks: Sequence[Any]) -> list[tuple[int, bytes]]:
        from .packbits import pack_masks

        arrays = [as_mask(m) for m in masks]
        needs_stream = any(k is not None for k in self.kinds)
        pm = pack_masks(arrays) if needs_stream else None
        ids, payloads = self.encode_packed(arrays, pm)
        return list(zip(ids.tolist(), payloads))

    def encode_packed(
        self,
        masks: Sequence[np.ndarray],
        pm: Any,
        runs: Any = None,
        which: np.ndarray | None = None,
        exclude: Mapping[int, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, list[bytes]]:
        """Codec ids (int64 array) and payloads of masks ``which`` (default:
        all) of ``masks``, whose packed stream ``pm`` is given (it may be None
        when no built-in codec is involved) and, optionally, their runs
        (a :class:`~iidschema.codecs.rle.RunBatch`).

        :param exclude: for ``"auto"``: codec id -> bool array over ``which``
            of the masks that codec must not be tried on (the writer does
            not try zstd on small masks).
        """
        return self.start_packed(masks, pm, runs, which, exclude)()

    def start_packed(
        self,
        masks: Sequence[np.ndarray],
        pm: Any,
        runs: Any = None,
        which: np.ndarray | None = None,
        exclude: Mapping[int, np.ndarray] | None = None,
    ) -> Callable[[], tuple[np.ndarray, list[bytes]]]:
        """:meth:`encode_packed` in two halves: this call does the work up to
        zstd compression, which runs in a background thread (zstandard
        releases the GIL), and returns a function that waits for it and
        finishes.  A writer does other work (the next batch of masks) in
        between; the results are the same."""
        from .rle import RunBatch

        which = np.arange(len(masks), dtype=np.int64) if which is None else np.asarray(which, dtype=np.int64)
        m = which.size
        if runs is None and "rle" in self.kinds:
            runs = RunBatch.of(pm)

        def payloads_of(k: int, sel: np.ndarray) -> list[bytes]:
            kind, codec = self.kinds[k], self.codecs[k]
            if kind == "packbits":
                return pm.payloads(sel)
            if kind == "rle":
                return runs.payloads(sel)
            if kind == "zstd":
                return codec.compress_many(pm.payloads(sel))
            return encode_many(codec, [masks[i] for i in sel.tolist()])

        if not self.auto:
            result = (np.full(m, self.codecs[0].id, dtype=np.int64), payloads_of(0, which))
            return lambda: result
        sizes = np.full((len(self.codecs), m), _NEVER, dtype=np.int64)
        best = np.full(m, _NEVER, dtype=np.int64)  # smallest size among lower ids
        made: dict[int, tuple[np.ndarray, list[bytes]]] = {}
        pending: dict[int, tuple[np.ndarray, Any]] = {}
        for k, kind in enumerate(self.kinds):
            skip = None if exclude is None else exclude.get(self.codecs[k].id)
            if kind == "packbits":
                sizes[k] = pm.starts[which + 1] - pm.starts[which]
            elif kind == "rle":
                sizes[k] = runs.sizes()[which]
            else:
                candidates = np.ones(m, dtype=np.bool_) if skip is None else ~skip
                if kind == "zstd":
                    from .zstd import MIN_FRAME_BYTES

                    # zstd wins only when strictly smaller than the lower
                    # ids; it is never below MIN_FRAME_BYTES (for a mask
                    # with pixels; an empty one is 0 bytes in packbits).
                    candidates &= best > MIN_FRAME_BYTES
                tried = np.flatnonzero(candidates)
                if kind == "zstd" and tried.size >= _BACKGROUND_MIN:
                    # Only zstd's own pruning reads ``best``, so its sizes
                    # can wait until finish().
                    pending[k] = (tried, _executor().submit(payloads_of, k, which[tried]))
                    continue
                payloads = payloads_of(k, which[tried])
                made[k] = (tried, payloads)
                sizes[k, tried] = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
            if skip is not None:
                sizes[k, skip] = _NEVER
            np.minimum(best, sizes[k], out=best)
        return lambda: self._finish(m, which, sizes, made, pending, payloads_of)

    def _finish(
        self,
        m: int,
        which: np.ndarray,
        sizes: np.ndarray,
        made: dict[int, tuple[np.ndarray, list[bytes]]],
        pending: dict[int, tuple[np.ndarray, Any]],
        payloads_of: Callable[[int, np.ndarray], list[bytes]],
    ) -> tuple[np.ndarray, list[bytes]]:
        for k, (tried, future) in pending.items():
            payloads = future.result()
            made[k] = (tried, payloads)
            sizes[k, tried] = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        choice = sizes.argmin(axis=0)  # the first minimum: lowest id on ties
        ids = np.array([c.id for c in self.codecs], dtype=np.int64)[choice]
        # Gather every chosen payload into one list, then put it in mask
        # order with one permutation.
        order_parts: list[np.ndarray] = []
        gathered: list[bytes] = []
        for k in range(len(self.codecs)):
            chosen = np.flatnonzero(choice == k)
            if not chosen.size:
                continue
            order_parts.append(chosen)
            if k in made:
                tried, payloads = made[k]
                position = np.full(m, -1, dtype=np.int64)
                position[tried] = np.arange(tried.size)
                gathered += [payloads[p] for p in position[chosen].tolist()]
            else:
                gathered += payloads_of(k, which[chosen])
        if not order_parts:
            return ids, []
        rank = np.empty(m, dtype=np.int64)
        rank[np.concatenate(order_parts)] = np.arange(m)
        return ids, [gathered[r] for r in rank.tolist()]


def encoder_many_for(codec: CodecLike, candidates: Sequence[CodecLike] | None = None) -> BulkEncoder:
    """A function ``masks -> [(codec_id, payload), ...]`` for a codec or
    ``"auto"``: :func:`encoder_for` for many masks at once, with the same
    choices and bytes (see :class:`BulkEncoder`)."""
    return BulkEncoder(codec, candidates)


def encode_auto_many(masks: Sequence[Any], candidates: Iterable[CodecLike] | None = None) -> list[tuple[int, bytes]]:
    """:func:`encode_auto` of each mask, computed in bulk (same results)."""
    return BulkEncoder("auto", None if candidates is None else list(candidates))(masks)
