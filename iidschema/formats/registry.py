"""Reader/writer plugins: declarations, the registry built from them, and
choosing a reader or writer for a path.

A plugin declares formats through the hook ``iidschema_formats()``
(:mod:`iidschema.plugins.hookspecs`), returning :class:`FormatSpec` objects.
A declaration is cheap: readers, writers and probes are named by
``"package.module:function"`` strings imported on first use, so listing
formats never imports pycocotools, Pillow or medmask.

Reading (IOFormat's extractors): the formats claiming the path's extension
(or the ``format`` asked for) are tried plugin by plugin in the *reader
order*: lexicographic by plugin name, overridden by ``plugin_order`` in the
configuration file (:mod:`iidschema.formats.config`).  A reader first probes
the file (cheap: magic bytes, JSON keys) and may decline; the first reader
that reads the file wins.  When none does, :class:`IIDNoReaderError` lists
every plugin tried and why it declined or failed.

Writing: the writer is chosen by ``format`` or by extension, not by the
configuration: among writers of a format, iidschema's built-in plugins come
first, then the others by plugin name.  Each writer validates its own options
(:class:`Option`): an unknown option is an :class:`IIDOptionError` listing
the valid ones, a bad value one saying why.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import IIDError, IIDFormatError, IIDPluginError
from ..plugins.manager import IIDPluginManager, call_each, describe_plugin, get_plugin_manager
from . import config as _config

__all__ = [
    "Option",
    "FormatSpec",
    "DeclaredFormat",
    "FormatRegistry",
    "IIDOptionError",
    "IIDNoReaderError",
    "BUILTIN_FORMATS_MODULE",
    "BUILTIN_FORMATS_PLUGIN",
    "get_registry",
    "read",
    "write",
    "formats",
    "declared_formats",
]

log = logging.getLogger("iidschema.plugins")

#: The module declaring the built-in formats (entry point ``builtin_formats``).
BUILTIN_FORMATS_MODULE = "iidschema.formats.builtin"
#: Its plugin name.
BUILTIN_FORMATS_PLUGIN = "builtin_formats"

_CAPABILITIES = ("read", "write", "lazy", "multi", "directory")


class IIDOptionError(IIDError, ValueError):
    """An option a reader or writer does not know, or a bad option value."""


class IIDNoReaderError(IIDFormatError):
    """No plugin could read a file; ``tried`` lists ``(plugin, format, reason)``."""

    def __init__(self, message: str, tried: Sequence[tuple[str, str, str]] = ()):
        super().__init__(message)
        self.tried = list(tried)


_MISSING = object()


@dataclass(frozen=True)
class Option:
    """One reader or writer option.

    :param name: the keyword (``compress_level``).
    :param default: its default value.
    :param help: one line for ``iidschema formats`` and error messages.
    :param type: expected type (``int``, ``float``, ``bool``, ``str``) or a
        tuple of types; ``object`` accepts anything.  Strings (from the
        command line's ``-o KEY=VALUE``) are converted to ``int``, ``float``
        and ``bool``.
    :param choices: the allowed values, if limited.
    :param check: ``value -> None | str``: a reason when the value is bad.
    """

    name: str
    default: Any = None
    help: str = ""
    type: Any = object
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None

    def coerce(self, value: Any, where: str) -> Any:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if isinstance(value, str) and str not in types and object not in types:
            value = _from_text(value, types, lambda why: self._bad(value, why, where))
        if self.choices is not None:
            if isinstance(value, str) and value not in self.choices:
                value = next((ch for ch in self.choices if str(ch).lower() == value.strip().lower()), value)
            if value not in self.choices or isinstance(value, bool) != any(isinstance(ch, bool) and ch == value for ch in self.choices):
                self._bad(value, f"must be one of {', '.join(repr(c) for c in self.choices)}", where)
        elif object not in types:
            if isinstance(value, bool) and bool not in types:
                self._bad(value, f"must be {_type_names(types)}, not a bool", where)
            if not isinstance(value, types) and not (float in types and isinstance(value, int)):
                self._bad(value, f"must be {_type_names(types)}, got {type(value).__name__}", where)
        if self.check is not None and value is not None:
            reason = self.check(value)
            if reason:
                self._bad(value, reason, where)
        return value

    def _bad(self, value: Any, why: str, where: str) -> None:
        raise IIDOptionError(f"{where}: bad value {value!r} for option {self.name!r}: {why}")

    def describe(self) -> str:
        choices = f" (one of {', '.join(repr(c) for c in self.choices)})" if self.choices else ""
        return f"{self.name}={self.default!r}{choices}: {self.help}"


def _type_names(types: tuple[Any, ...]) -> str:
    return " or ".join(getattr(t, "__name__", str(t)) for t in types if t is not type(None)) + (
        " or None" if type(None) in types else ""
    )


def _from_text(text: str, types: tuple[Any, ...], bad: Callable[[str], None]) -> Any:
    low = text.strip().lower()
    if type(None) in types and low in ("none", "null", ""):
        return None
    if bool in types and low in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return low in ("true", "yes", "on", "1")
    if int in types:
        try:
            return int(text, 0)
        except ValueError:
            pass
    if float in types:
        try:
            return float(text)
        except ValueError:
            pass
    bad(f"cannot be read as {_type_names(types)}")
    return None  # pragma: no cover


Loader = Any  # "pkg.module:attr" or a callable


@dataclass(frozen=True)
class FormatSpec:
    """One format a plugin reads and/or writes.

    :param name: the format's name (``"coco"``); several plugins may declare
        the same format (they are then tried in the reader order).
    :param extensions: lower-case file name endings mapped to this format,
        with the dot (``(".json",)``).
    :param description: one line for ``iidschema formats``.
    :param reader: ``"pkg.module:function"`` (or a callable)
        ``read(path, **options) -> IIDFile | list[IIDFile]``; ``None`` if
        the format is write-only.
    :param writer: ``write(obj, path, **options) -> None`` where ``obj`` is an
        IIDFile, or a list of them when ``multi``; ``None`` if read-only.
    :param probe: ``probe(path) -> None | str``: cheap check before reading;
        a string is the reason the reader declines.  Optional.
    :param read_options, write_options: the :class:`Option` each side takes.
    :param lazy: the reader returns lazily loaded objects (streaming).
    :param multi: one file holds many images: the reader returns a list, the
        writer takes a list.
    :param directory: the path is a folder, not a file.
    :param requires: distributions the reader/writer imports (named in the
        error when one is missing), e.g. ``("pycocotools",)``.
    """

    name: str
    extensions: tuple[str, ...] = ()
    description: str = ""
    reader: Loader = None
    writer: Loader = None
    probe: Loader = None
    read_options: tuple[Option, ...] = ()
    write_options: tuple[Option, ...] = ()
    lazy: bool = False
    multi: bool = False
    directory: bool = False
    requires: tuple[str, ...] = ()

    @property
    def capabilities(self) -> tuple[str, ...]:
        have = {
            "read": self.reader is not None,
            "write": self.writer is not None,
            "lazy": self.lazy and self.reader is not None,
            "multi": self.multi,
            "directory": self.directory,
        }
        return tuple(c for c in _CAPABILITIES if have[c])


def _check_spec(spec: Any, plugin: str) -> FormatSpec:
    if not isinstance(spec, FormatSpec):
        raise IIDPluginError(f"plugin {plugin!r}: iidschema_formats() returned {spec!r}, which is not a FormatSpec")
    if not isinstance(spec.name, str) or not spec.name or spec.name != spec.name.strip():
        raise IIDPluginError(f"plugin {plugin!r}: format name must be a non-empty string, got {spec.name!r}")
    if isinstance(spec.extensions, str) or not all(isinstance(e, str) and e.startswith(".") for e in spec.extensions):
        raise IIDPluginError(
            f"plugin {plugin!r}: format {spec.name!r}: extensions must be a tuple of strings starting with '.', got {spec.extensions!r}"
        )
    if spec.reader is None and spec.writer is None:
        raise IIDPluginError(f"plugin {plugin!r}: format {spec.name!r} has neither a reader nor a writer")
    for side, opts in (("read", spec.read_options), ("write", spec.write_options)):
        names = [o.name for o in opts]
        if not all(isinstance(o, Option) for o in opts) or len(set(names)) != len(names):
            raise IIDPluginError(f"plugin {plugin!r}: format {spec.name!r}: {side}_options must be distinct Option objects")
    return spec


def _resolve(loader: Loader) -> Any:
    if callable(loader):
        return loader
    module_name, _, attr = str(loader).partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _loader_text(loader: Loader) -> str:
    return loader if isinstance(loader, str) else describe_plugin(loader)


@dataclass(frozen=True)
class DeclaredFormat:
    """A :class:`FormatSpec` together with the plugin that declared it."""

    spec: FormatSpec
    plugin: str
    builtin: bool

    @property
    def name(self) -> str:
        return self.spec.name

    def where(self) -> str:
        return f"format {self.spec.name!r} of plugin {self.plugin!r}"

    def load(self, side: str) -> Callable[..., Any]:
        loader = self.spec.reader if side == "read" else self.spec.writer if side == "write" else self.spec.probe
        try:
            return _resolve(loader)
        except ImportError as exc:
            needs = f" (needs {', '.join(self.spec.requires)}: pip install {' '.join(self.spec.requires)})" if self.spec.requires else ""
            raise IIDPluginError(
                f"the {side}er of {self.where()} cannot be imported from {_loader_text(loader)}: {exc}{needs}"
            ) from exc
        except Exception as exc:
            raise IIDPluginError(
                f"the {side}er of {self.where()} cannot be loaded from {_loader_text(loader)}: {type(exc).__name__}: {exc}"
            ) from exc

    def options(self, side: str, given: dict[str, Any]) -> dict[str, Any]:
        """Validate ``given`` against the declared options of ``side``
        (``"read"``/``"write"``) and fill in the defaults."""
        declared = {o.name: o for o in (self.spec.read_options if side == "read" else self.spec.write_options)}
        where = f"{'reading' if side == 'read' else 'writing'} {self.spec.name}"
        unknown = sorted(set(given) - set(declared))
        if unknown:
            valid = ", ".join(sorted(declared)) or "none"
            raise IIDOptionError(f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; valid options: {valid}")
        out = {}
        for name, opt in declared.items():
            out[name] = opt.coerce(given[name], where) if name in given else opt.default
        return out

    def as_dict(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": s.name,
            "plugin": self.plugin,
            "extensions": list(s.extensions),
            "capabilities": list(s.capabilities),
            "description": s.description,
            "reader": _loader_text(s.reader) if s.reader is not None else None,
            "writer": _loader_text(s.writer) if s.writer is not None else None,
            "read_options": [{"name": o.name, "default": o.default, "help": o.help, "choices": list(o.choices) if o.choices else None} for o in s.read_options],
            "write_options": [{"name": o.name, "default": o.default, "help": o.help, "choices": list(o.choices) if o.choices else None} for o in s.write_options],
            "requires": list(s.requires),
        }


def declared_formats(pm: IIDPluginManager | None = None) -> tuple[list[DeclaredFormat], list[tuple[str, str]]]:
    """Every plugin's format declarations (plugins not filtered, not ordered),
    and ``(plugin, error)`` for plugins whose hook failed (also recorded on
    the manager as failures at stage ``"hook iidschema_formats"``)."""
    pm = get_plugin_manager() if pm is None else pm
    _ensure_builtin(pm)
    out: list[DeclaredFormat] = []
    problems: list[tuple[str, str]] = []
    for call in call_each(pm, "iidschema_formats"):
        value = (pm.sources.get(call.plugin_name) or {}).get("value") or describe_plugin(call.plugin)
        try:
            if call.error is not None:
                raise IIDPluginError(
                    f"plugin {call.plugin_name!r}: iidschema_formats() raised {type(call.error).__name__}: {call.error}"
                )
            result = call.result
            if result is None:
                continue
            if isinstance(result, FormatSpec):
                result = [result]
            if not isinstance(result, (list, tuple)):
                raise IIDPluginError(
                    f"plugin {call.plugin_name!r}: iidschema_formats() must return a list of FormatSpec, got {type(result).__name__}"
                )
            specs = [_check_spec(s, call.plugin_name) for s in result]
            names = [s.name for s in specs]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise IIDPluginError(f"plugin {call.plugin_name!r} declares format(s) {', '.join(map(repr, dup))} twice")
        except IIDPluginError as exc:
            pm.record_failure(call.plugin_name, str(value), "hook iidschema_formats", exc)
            problems.append((call.plugin_name, str(exc)))
            continue
        builtin = getattr(call.plugin, "__name__", None) == BUILTIN_FORMATS_MODULE
        out.extend(DeclaredFormat(s, call.plugin_name, builtin) for s in specs)
    return out, problems


def _ensure_builtin(pm: IIDPluginManager) -> None:
    """Register the built-in formats directly when no entry point did
    (running from a source tree that was never installed)."""
    for plugin in pm.get_plugins():
        if getattr(plugin, "__name__", None) == BUILTIN_FORMATS_MODULE:
            return
    if pm.get_plugin(BUILTIN_FORMATS_PLUGIN) is not None or pm.is_blocked(BUILTIN_FORMATS_PLUGIN):
        return
    with _LOCK:
        if any(getattr(p, "__name__", None) == BUILTIN_FORMATS_MODULE for p in pm.get_plugins()):
            return
        module = importlib.import_module(BUILTIN_FORMATS_MODULE)
        pm.register(module, name=BUILTIN_FORMATS_PLUGIN)
        pm.sources[BUILTIN_FORMATS_PLUGIN] = {"kind": "fallback", "value": BUILTIN_FORMATS_MODULE, "dist": None}
        note = (
            f"no entry point in group 'iidschema' names {BUILTIN_FORMATS_MODULE!r} (iidschema is not installed "
            "with it): the built-in formats were registered directly"
        )
        if note not in pm.notes:
            pm.notes.append(note)
        log.info(note)


def _path_is_dir(path: str) -> bool:
    return os.path.isdir(path) or path.endswith(("/", os.sep))


@dataclass
class FormatRegistry:
    """The formats usable now: declarations of the selected plugins, in
    reader order."""

    config: _config.FormatsConfig
    plugin_order: list[str]
    excluded: list[str]
    declared: list[DeclaredFormat]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def format_names(self) -> list[str]:
        return sorted({d.name for d in self.declared})

    def readers(self, fmt: str | None = None) -> list[DeclaredFormat]:
        """Readers in reader order (of one format, or all)."""
        rank = {n: i for i, n in enumerate(self.plugin_order)}
        found = [d for d in self.declared if d.spec.reader is not None and (fmt is None or d.name == fmt)]
        return sorted(found, key=lambda d: (rank.get(d.plugin, len(rank)), d.name))

    def writers(self, fmt: str | None = None) -> list[DeclaredFormat]:
        """Writers of one format (or all): built-ins first, then by plugin name."""
        found = [d for d in self.declared if d.spec.writer is not None and (fmt is None or d.name == fmt)]
        return sorted(found, key=lambda d: (not d.builtin, d.plugin, d.name))

    def _known(self, fmt: str, side: str) -> None:
        if fmt not in self.format_names():
            raise IIDPluginError(f"unknown format {fmt!r}; known formats: {', '.join(self.format_names()) or 'none'}")
        raise IIDPluginError(
            f"format {fmt!r} cannot be {'read' if side == 'read' else 'written'} by any installed plugin; "
            f"formats that can: {', '.join(sorted({d.name for d in (self.readers() if side == 'read' else self.writers())}))}"
        )

    @staticmethod
    def _claims(d: DeclaredFormat, path: str) -> bool:
        if d.spec.directory and _path_is_dir(path):
            return True
        name = os.path.basename(path.rstrip("/" + os.sep)).lower()
        return any(name.endswith(ext.lower()) for ext in d.spec.extensions)

    def readers_for(self, path: str, fmt: str | None = None) -> list[DeclaredFormat]:
        if fmt is not None:
            found = self.readers(fmt)
            if not found:
                self._known(fmt, "read")
            return found
        found = [d for d in self.readers() if self._claims(d, path)]
        if not found:
            raise IIDNoReaderError(
                f"no reader claims {path!r} by its extension; pass format=... "
                f"(known extensions: {self._extension_list('read')})"
            )
        return found

    def writer_for(self, path: str, fmt: str | None = None) -> DeclaredFormat:
        if fmt is not None:
            found = self.writers(fmt)
            if not found:
                self._known(fmt, "write")
            return found[0]
        found = [d for d in self.writers() if self._claims(d, path)]
        if not found:
            raise IIDPluginError(
                f"no writer claims {path!r} by its extension; pass format=... "
                f"(known extensions: {self._extension_list('write')})"
            )
        return found[0]

    def _extension_list(self, side: str) -> str:
        pairs = {}
        for d in self.readers() if side == "read" else self.writers():
            for ext in d.spec.extensions:
                pairs.setdefault(ext, set()).add(d.name)
            if d.spec.directory:
                pairs.setdefault("<folder>", set()).add(d.name)
        return ", ".join(f"{ext} ({'/'.join(sorted(n))})" for ext, n in sorted(pairs.items())) or "none"

    def mapping_lines(self) -> list[str]:
        """The format -> plugin mapping, one line per format (what is logged)."""
        lines = []
        for name in self.format_names():
            readers = [d.plugin for d in self.readers(name)]
            writers = [d.plugin for d in self.writers(name)]
            exts = sorted({e for d in self.declared if d.name == name for e in d.spec.extensions})
            if any(d.spec.directory for d in self.declared if d.name == name):
                exts.append("<folder>")
            lines.append(
                f"format {name!r} ({', '.join(exts) or 'no extension'}): "
                f"read by {' > '.join(readers) or '-'}; written by {writers[0] if writers else '-'}"
            )
        return lines


_LOCK = threading.RLock()
_CACHE: dict[str, Any] = {}


def get_registry(pm: IIDPluginManager | None = None) -> FormatRegistry:
    """The registry for the current plugins and configuration; rebuilt (and
    the mapping logged at INFO on ``iidschema.plugins``) when either changed."""
    pm = get_plugin_manager() if pm is None else pm
    with _LOCK:
        _ensure_builtin(pm)
        key = (id(pm), pm.generation, _config.config_stamp())
        reg = _CACHE.get("registry")
        if reg is not None and _CACHE.get("key") == key:
            return reg
        cfg = _config.load_config()
        declared, problems = declared_formats(pm)
        selected: list[DeclaredFormat] = []
        excluded: set[str] = set()
        for d in declared:
            src = pm.sources.get(d.plugin) or {}
            names = [d.plugin, str(src.get("value") or ""), str(src.get("dist") or "")]
            if _config.matches_libraries(cfg, names):
                selected.append(d)
            else:
                excluded.add(d.plugin)
        order = _config.order_plugins({d.plugin for d in selected}, cfg)
        missing = [n for n in cfg.plugin_order if n not in order]
        reg = FormatRegistry(cfg, order, sorted(excluded), selected, problems)
        log.info("iidschema formats: %s; reader order of plugins: %s", cfg.describe(), ", ".join(order) or "(none)")
        if excluded:
            log.info("iidschema formats: plugins not selected by 'libraries' %s: %s", list(cfg.libraries or ()), ", ".join(sorted(excluded)))
        if missing:
            log.info("iidschema formats: plugin_order names no plugin with formats: %s", ", ".join(missing))
        for line in reg.mapping_lines():
            log.info("iidschema formats: %s", line)
        _CACHE["registry"], _CACHE["key"] = reg, key
        return reg


# ------------------------------------------------------------------------------
# The public functions
# ------------------------------------------------------------------------------


def read(path: str | os.PathLike[str], format: str | None = None, **options: Any) -> Any:
    """Read ``path`` with the first plugin that can.

    Returns what the format holds: an :class:`~iidschema.IIDFile` for
    single-image formats (``.iid``, PNG, medmask), a list of IIDFiles (one
    per image, in the file's image order) for multi-image formats (COCO).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path!r}")
    reg = get_registry()
    candidates = reg.readers_for(path, format)
    tried: list[tuple[str, str, str]] = []
    for d in candidates:
        try:
            opts = d.options("read", options)
        except IIDOptionError as exc:
            if format is not None or len(candidates) == 1:
                raise
            tried.append((d.plugin, d.name, f"declined: {exc}"))
            continue
        try:
            if d.spec.probe is not None:
                reason = d.load("probe")(path)
                if reason:
                    tried.append((d.plugin, d.name, f"declined: {reason}"))
                    continue
            reader = d.load("read")
        except Exception as exc:  # a broken plugin must not stop the others
            tried.append((d.plugin, d.name, f"unavailable: {exc}"))
            continue
        try:
            result = reader(path, **opts)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            tried.append((d.plugin, d.name, f"failed: {type(exc).__name__}: {exc}"))
            log.debug("reader %s failed on %s", d.where(), path, exc_info=True)
            continue
        log.debug("read %s with %s", path, d.where())
        return result
    lines = "\n".join(f"  - plugin {p!r} (format {f!r}): {why}" for p, f, why in tried)
    raise IIDNoReaderError(f"no plugin could read {path!r}; tried, in order:\n{lines}", tried)


def write(obj: Any, path: str | os.PathLike[str], format: str | None = None, **options: Any) -> None:
    """Write ``obj`` (an IIDFile, or a list of IIDFiles for multi-image
    formats) to ``path`` in ``format`` (default: from the extension)."""
    path = os.fspath(path)
    d = get_registry().writer_for(path, format)
    opts = d.options("write", options)
    items = list(obj) if isinstance(obj, (list, tuple)) else None
    if d.spec.multi:
        payload: Any = items if items is not None else [obj]
    elif items is not None:
        if len(items) != 1:
            raise IIDPluginError(
                f"format {d.name!r} holds one image per file, got {len(items)}; write them one by one "
                "(`iidschema convert` does that into a folder)"
            )
        payload = items[0]
    else:
        payload = obj
    d.load("write")(payload, path, **opts)


def formats(pm: IIDPluginManager | None = None) -> list[dict[str, Any]]:
    """Every usable format declaration as a dict (name, plugin, extensions,
    capabilities, description, reader/writer loaders, options), readers in
    reader order; imports no reader or writer."""
    reg = get_registry(pm)
    seen = set()
    out = []
    for d in reg.readers() + reg.writers():
        if id(d) not in seen:
            seen.add(id(d))
            out.append(d.as_dict())
    return sorted(out, key=lambda x: x["name"])
