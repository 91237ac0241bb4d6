"""iidschema's plugin system: one pluggy manager for every extension point.

Plugins are packages with an entry point in group ``iidschema`` naming a
module (or object) that implements hooks marked with :data:`hookimpl`; see
:mod:`iidschema.plugins.hookspecs` for the hooks and docs/CODECS.md for a
complete example.  Discovery is lazy (first use) and never fatal: a plugin
that fails is recorded in :func:`failed_plugins` and skipped.

Public API::

    get_plugin_manager() -> IIDPluginManager      # lazy singleton
    register_plugin(obj, name=None) -> str         # for tests and applications
    unregister_plugin(name_or_obj) -> object
    failed_plugins() -> list[PluginFailure]
    plugins_report() -> dict; format_plugins_report(report) -> str   (in .report)
"""

from __future__ import annotations

from typing import Any

from ..errors import IIDPluginError
from .hookspecs import hookimpl, hookspec
from .manager import (
    ENTRY_POINT_GROUP,
    IIDPluginManager,
    PluginFailure,
    describe_plugin,
    get_plugin_manager,
    reset_plugin_manager,
)

__all__ = [
    "hookimpl",
    "hookspec",
    "ENTRY_POINT_GROUP",
    "IIDPluginManager",
    "PluginFailure",
    "get_plugin_manager",
    "reset_plugin_manager",
    "register_plugin",
    "unregister_plugin",
    "failed_plugins",
]


def register_plugin(obj: Any, name: str | None = None) -> str:
    """Register a plugin object (module, class or instance with ``@hookimpl``
    methods) on the project's manager; returns its name.

    Its codecs are checked at once: a misdeclared codec or a codec id/name
    already taken raises :class:`IIDPluginError` (naming both plugins) and
    the plugin is left unregistered.  Codec caches are invalidated.
    """
    pm = get_plugin_manager()
    try:
        registered = pm.register(obj, name=name)
    except ValueError as exc:  # already registered, or name taken
        raise IIDPluginError(f"cannot register plugin {name or describe_plugin(obj)!r}: {exc}") from exc
    if registered is None:
        raise IIDPluginError(f"plugin name {name!r} is blocked")
    pm.sources[registered] = {"kind": "registered", "value": describe_plugin(obj), "dist": None}
    try:
        from ..codecs import check_plugin_codecs  # late: codecs imports the manager

        check_plugin_codecs(pm, registered)
    except BaseException:
        pm.unregister(name=registered)
        pm.sources.pop(registered, None)
        raise
    return registered


def unregister_plugin(name_or_obj: str | Any) -> Any:
    """Remove a plugin by name or object; returns the plugin object.

    Raises :class:`IIDPluginError` if no such plugin is registered.
    """
    pm = get_plugin_manager()
    if isinstance(name_or_obj, str):
        plugin, name = pm.get_plugin(name_or_obj), name_or_obj
    else:
        plugin, name = name_or_obj, pm.get_name(name_or_obj)
    if plugin is None or name is None:
        raise IIDPluginError(f"no plugin {name_or_obj!r} is registered")
    pm.unregister(name=name)
    pm.sources.pop(name, None)
    pm.forget_failures(name)
    return plugin


def failed_plugins() -> list[PluginFailure]:
    """Plugins (or their codecs) that failed to load, and why; never raises."""
    return list(get_plugin_manager().failures)
