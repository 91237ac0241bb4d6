"""The one plugin manager of iidschema, and plugin discovery.

Why not ``pluggy.PluginManager.load_setuptools_entrypoints``?  It stops at the
first plugin that fails to import, so one broken third-party package would
take the built-in codecs (registered the same way) down with it.  Here each
entry point is loaded on its own; a failure is recorded
(:func:`failed_plugins`), logged at WARNING on the ``iidschema.plugins``
logger, and skipped.  Nothing a plugin does at load time is fatal.

Built-in codecs are an ordinary plugin (``iidschema.codecs.builtin``) found
through the entry point ``builtin_codecs`` in group ``iidschema``.  When that
entry point is missing (running from a source tree that was never
installed), the module is registered directly, and a note says so.
"""

from __future__ import annotations

import importlib
import importlib.metadata as importlib_metadata
import logging
import threading
import types
from dataclasses import dataclass
from typing import Any, Iterable

import pluggy

from ..errors import IIDPluginError
from . import hookspecs
from .hookspecs import PROJECT_NAME

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILTIN_MODULE",
    "BUILTIN_PLUGIN_NAME",
    "PluginFailure",
    "PluginCall",
    "IIDPluginManager",
    "iter_entry_points",
    "create_plugin_manager",
    "get_plugin_manager",
    "reset_plugin_manager",
    "call_each",
    "describe_plugin",
]

log = logging.getLogger("iidschema.plugins")

#: The ``importlib.metadata`` entry point group scanned for plugins.
ENTRY_POINT_GROUP = "iidschema"
#: The module that holds the built-in codecs' hook implementation.
BUILTIN_MODULE = "iidschema.codecs.builtin"
#: The name of the built-in plugin (the entry point's name in pyproject.toml).
BUILTIN_PLUGIN_NAME = "builtin_codecs"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, and why.

    :param name: plugin (entry point) name.
    :param value: the entry point value (``"pkg.module"``) or a description
        of the object.
    :param stage: what failed: ``"load"`` (import), ``"register"``,
        ``"hook iidschema_codecs"``, ``"codecs"`` (misdeclared or conflicting
        codecs), ``"load codec NAME"`` (a codec's own import, on first use).
    :param error: ``"ExceptionType: message"``.
    """

    name: str
    value: str
    stage: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "stage": self.stage, "error": self.error}


@dataclass
class PluginCall:
    """The outcome of calling one plugin's implementation of a hook."""

    plugin_name: str
    plugin: Any
    result: Any = None
    error: BaseException | None = None


class IIDPluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that also remembers where each plugin
    came from and which failed, and counts registrations.

    ``generation`` changes on every register/unregister, so caches built from
    the hooks (the codec registry) know cheaply when they are stale, even if
    someone registers directly on the manager.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.generation = 0
        #: plugin name -> {"kind": "entry point" | "registered" | "fallback", "value": ..., "dist": ...}
        self.sources: dict[str, dict[str, str | None]] = {}
        self.failures: list[PluginFailure] = []
        #: Facts worth telling in the report (e.g. the source-tree fallback).
        self.notes: list[str] = []
        self.add_hookspecs(hookspecs)

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        finally:
            self.generation += 1

    def unregister(self, plugin: Any | None = None, name: str | None = None) -> Any | None:
        try:
            removed = super().unregister(plugin=plugin, name=name)
        finally:
            self.generation += 1
        return removed

    def record_failure(self, name: str, value: str, stage: str, exc: BaseException | str) -> PluginFailure:
        """Remember (once) and log that a plugin failed; returns the record."""
        error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        failure = PluginFailure(name=name, value=value, stage=stage, error=error)
        if failure not in self.failures:
            self.failures.append(failure)
            log.warning("iidschema plugin %r (%s) failed at %s and was skipped: %s", name, value, stage, error)
        return failure

    def forget_failures(self, name: str) -> None:
        """Drop the failure records of plugin ``name`` (when it is unregistered)."""
        self.failures = [f for f in self.failures if f.name != name]


def describe_plugin(plugin: Any) -> str:
    """A short text naming a plugin object (module name, or module:qualname)."""
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return f"{cls.__module__}:{cls.__qualname__}"


def iter_entry_points() -> list[importlib_metadata.EntryPoint]:
    """The entry points of group ``iidschema``, iidschema's own first.

    Duplicates (the same distribution seen twice on ``sys.path``) are
    dropped.  Tests monkeypatch this function to inject broken plugins.
    """
    seen: set[tuple[str, str]] = set()
    found = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            found.append(ep)
    found.sort(key=lambda ep: (not ep.value.startswith("iidschema."), ep.name))
    return found


def _dist_of(ep: importlib_metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return f"{dist.name} {dist.version}"
    except Exception:  # pragma: no cover - broken metadata
        return None


def _validate_new_plugin(pm: IIDPluginManager, name: str) -> None:
    """Call the new plugin's hooks once: raise if they fail or conflict."""
    from ..codecs import check_plugin_codecs  # late: codecs imports this module

    check_plugin_codecs(pm, name)


def _load_entry_point(pm: IIDPluginManager, ep: importlib_metadata.EntryPoint) -> None:
    value = ep.value
    try:
        plugin = ep.load()
    except Exception as exc:
        pm.record_failure(ep.name, value, "load", exc)
        return
    try:
        registered = pm.register(plugin, name=ep.name)
    except Exception as exc:
        pm.record_failure(ep.name, value, "register", exc)
        return
    if registered is None:  # blocked by name
        pm.record_failure(ep.name, value, "register", "plugin name is blocked")
        return
    pm.sources[ep.name] = {"kind": "entry point", "value": value, "dist": _dist_of(ep)}
    try:
        _validate_new_plugin(pm, ep.name)
    except Exception as exc:
        pm.unregister(name=ep.name)
        pm.sources.pop(ep.name, None)
        pm.record_failure(ep.name, value, "codecs", exc)


def _register_builtin_fallback(pm: IIDPluginManager) -> None:
    note = (
        f"no entry point in group {ENTRY_POINT_GROUP!r} names {BUILTIN_MODULE!r} (iidschema is not "
        "installed, e.g. running from a source tree): the built-in codecs were registered directly"
    )
    try:
        module = importlib.import_module(BUILTIN_MODULE)
        pm.register(module, name=BUILTIN_PLUGIN_NAME)
    except Exception as exc:
        pm.record_failure(BUILTIN_PLUGIN_NAME, BUILTIN_MODULE, "load", exc)
        return
    pm.sources[BUILTIN_PLUGIN_NAME] = {"kind": "fallback", "value": BUILTIN_MODULE, "dist": None}
    pm.notes.append(note)
    log.info(note)


def create_plugin_manager(*, discover: bool = True, entry_points: Iterable[Any] | None = None) -> IIDPluginManager:
    """A new manager with the hook specs and (unless ``discover=False``) every
    plugin of group ``iidschema`` loaded one by one.

    Applications use :func:`get_plugin_manager`; this is the factory (and a
    way for tests to build an isolated manager).
    """
    pm = IIDPluginManager()
    if not discover:
        return pm
    eps = list(iter_entry_points() if entry_points is None else entry_points)
    for ep in eps:
        _load_entry_point(pm, ep)
    if not any(ep.value.split(":")[0] == BUILTIN_MODULE for ep in eps):
        _register_builtin_fallback(pm)
    return pm


_LOCK = threading.RLock()
_MANAGER: IIDPluginManager | None = None
_BUILDING = threading.local()


def get_plugin_manager() -> IIDPluginManager:
    """The project's plugin manager, created (and plugins discovered) on first use."""
    pm = _MANAGER
    if pm is not None:
        return pm
    return _create_singleton()


def _create_singleton() -> IIDPluginManager:
    global _MANAGER
    with _LOCK:
        if _MANAGER is None:
            if getattr(_BUILDING, "active", False):
                # A plugin asked for the manager while being loaded: the
                # manager does not exist yet, and building another would
                # recurse.  This fails that plugin only (recorded).
                raise IIDPluginError("a plugin used the plugin manager while it was being loaded")
            _BUILDING.active = True
            try:
                _MANAGER = create_plugin_manager()
            finally:
                _BUILDING.active = False
        return _MANAGER


def reset_plugin_manager() -> None:
    """Forget the singleton: the next :func:`get_plugin_manager` rediscovers.

    For tests and for applications that installed a plugin at run time.
    """
    global _MANAGER
    with _LOCK:
        _MANAGER = None


def call_each(pm: pluggy.PluginManager, hook_name: str, *, only: str | None = None, **kwargs: Any) -> list[PluginCall]:
    """Call each plugin's implementation of ``hook_name`` separately.

    pluggy's own hook call merges all results and stops at the first
    exception; calling implementations one by one lets the caller attribute
    every result to its plugin (to name both sides of a conflict) and skip a
    failing plugin instead of failing them all.  Results come in
    registration order.
    """
    caller = getattr(pm.hook, hook_name)
    calls = []
    for impl in reversed(caller.get_hookimpls()):
        if only is not None and impl.plugin_name != only:
            continue
        call = PluginCall(impl.plugin_name, impl.plugin)
        try:
            call.result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            call.error = exc
        calls.append(call)
    return calls
