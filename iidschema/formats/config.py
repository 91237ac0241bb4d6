"""The formats configuration file: which plugins to use, and in what order.

Modelled on IOFormat's ``ioformat_config.yml``.  The file is YAML with two
optional keys::

    # ~/.config/iidschema/config.yml
    libraries:          # patterns: only plugins matching one of them are used
      - builtin
      - "*coco*"
    plugin_order:       # plugins tried first when reading, in this order
      - example_csv
      - builtin_formats

* ``libraries``: a plugin is used when one of the patterns matches its name,
  its entry point value (``"pkg.module"``) or its distribution name.  A
  pattern with ``*``, ``?`` or ``[`` is a shell glob (``fnmatch``), any other
  pattern matches as a case-insensitive substring (IOFormat's "libraries
  which contain ``dicom``").  Absent: every plugin is used.
* ``plugin_order``: plugin names tried first, in this order; unlisted plugins
  follow in the default order (lexicographic by plugin name).  Writers are not
  affected.

Where the file is found:

1. ``$IIDSCHEMA_CONFIG_FILE`` when that variable is set: the file it names
   replaces the default one (which is then ignored).  Set to an empty string,
   it means "no configuration file at all".
2. otherwise ``$XDG_CONFIG_HOME/iidschema/config.yml`` (when
   ``XDG_CONFIG_HOME`` is set), else ``~/.config/iidschema/config.yml``.

A missing default file is normal (defaults apply).  A file named by the
environment variable that does not exist, or any file that is not valid, is an
error (:class:`~iidschema.errors.IIDPluginError`) naming the file and the
problem: a configuration that is silently ignored is worse than none.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import IIDPluginError

__all__ = [
    "ENV_VAR",
    "CONFIG_KEYS",
    "FormatsConfig",
    "default_config_path",
    "config_path",
    "load_config",
    "config_stamp",
    "matches_libraries",
    "order_plugins",
]

#: Environment variable naming a configuration file that replaces the default one.
ENV_VAR = "IIDSCHEMA_CONFIG_FILE"
#: The keys a configuration file may hold.
CONFIG_KEYS = ("libraries", "plugin_order")


@dataclass(frozen=True)
class FormatsConfig:
    """A parsed configuration.

    :param path: the file read, or ``None`` when there was none.
    :param origin: ``"env"`` (from :data:`ENV_VAR`), ``"default"`` or ``"none"``.
    :param libraries: patterns selecting plugins, or ``None`` (all plugins).
    :param plugin_order: plugin names tried first when reading.
    """

    path: str | None = None
    origin: str = "none"
    libraries: tuple[str, ...] | None = None
    plugin_order: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.path is None:
            return "no configuration file" + (f" (${ENV_VAR} is empty)" if self.origin == "env" else "")
        return f"configuration {self.path}" + (f" (from ${ENV_VAR})" if self.origin == "env" else "")


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/iidschema/config.yml``, else ``~/.config/iidschema/config.yml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "iidschema" / "config.yml"


def config_path() -> tuple[str | None, str]:
    """The configuration file in force and where that choice came from:
    ``(path or None, "env" | "default" | "none")``.  The default path is
    returned only when the file exists."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return (env or None), "env"
    path = default_config_path()
    return (str(path), "default") if path.is_file() else (None, "none")


def config_stamp() -> tuple[Any, ...]:
    """A cheap value that changes whenever the configuration may have changed
    (the variable, the file chosen, its modification time and size)."""
    path, origin = config_path()
    if path is None:
        return (origin, None)
    try:
        st = os.stat(path)
        return (origin, path, st.st_mtime_ns, st.st_size)
    except OSError:
        return (origin, path, None)


def _strings(value: Any, key: str, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise IIDPluginError(f"formats configuration {path}: {key!r} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_config(text: str, path: str = "<string>", origin: str = "env") -> FormatsConfig:
    """Parse the YAML text of a configuration file."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
        raise IIDPluginError(f"formats configuration {path}: reading it needs PyYAML (pip install pyyaml)") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise IIDPluginError(f"formats configuration {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IIDPluginError(f"formats configuration {path}: expected a mapping with keys {', '.join(CONFIG_KEYS)}, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise IIDPluginError(
            f"formats configuration {path}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(CONFIG_KEYS)}"
        )
    libraries = _strings(data["libraries"], "libraries", path) if "libraries" in data else None
    order = _strings(data.get("plugin_order"), "plugin_order", path)
    return FormatsConfig(path=path, origin=origin, libraries=libraries, plugin_order=order)


def load_config() -> FormatsConfig:
    """Read the configuration in force (see the module docstring)."""
    path, origin = config_path()
    if path is None:
        return FormatsConfig(origin=origin)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise IIDPluginError(f"formats configuration {path} (named by ${ENV_VAR}) does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IIDPluginError(f"formats configuration {path} cannot be read: {exc}") from None
    return parse_config(text, path, origin)


def _pattern_matches(pattern: str, candidates: Iterable[str]) -> bool:
    glob = any(c in pattern for c in "*?[")
    for text in candidates:
        if not text:
            continue
        if glob:
            if fnmatch.fnmatchcase(text.lower(), pattern.lower()):
                return True
        elif pattern.lower() in text.lower():
            return True
    return False


def matches_libraries(config: FormatsConfig, names: Iterable[str]) -> bool:
    """True when a plugin known by ``names`` (plugin name, entry point value,
    distribution) is selected by the ``libraries`` patterns (always, without them)."""
    if config.libraries is None:
        return True
    names = list(names)
    return any(_pattern_matches(p, names) for p in config.libraries)


def order_plugins(names: Iterable[str], config: FormatsConfig) -> list[str]:
    """Reader order: ``plugin_order`` first (in its order, names not present
    skipped), then the others lexicographically."""
    present = sorted(set(names))
    first = [n for n in dict.fromkeys(config.plugin_order) if n in present]
    return first + [n for n in present if n not in first]
