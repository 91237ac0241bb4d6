"""What is installed: every plugin, its codecs (and later formats), and failures.

Backs the ``iidschema plugins`` command.  :func:`plugins_report` returns plain
data (JSON-serialisable) and never raises for a plugin problem: the point of
the report is to show what is broken.  It imports no codec implementation.
"""

from __future__ import annotations

from typing import Any

from ..errors import IIDPluginError
from .manager import ENTRY_POINT_GROUP, IIDPluginManager, describe_plugin, get_plugin_manager

__all__ = ["plugins_report", "format_plugins_report"]


def plugins_report(pm: IIDPluginManager | None = None) -> dict[str, Any]:
    """Every plugin with its source, codecs and formats, plus failures.

    Shape::

        {"entry_point_group": "iidschema",
         "plugins": [{"name", "source": {"kind", "value", "dist"}, "object",
                      "codecs": [{"id", "name", "description", "loader"}],
                      "formats": [{"name", "extensions", "capabilities", "description"}]}],
         "failures": [{"name", "value", "stage", "error"}],
         "notes": [str]}
    """
    from ..codecs import declared_codecs  # late: codecs imports the manager

    pm = get_plugin_manager() if pm is None else pm
    problems: list[dict[str, str]] = []
    try:
        decls = declared_codecs(pm)
    except IIDPluginError as exc:  # conflicting codecs: show them, list none
        decls = []
        problems.append({"name": "(codec registry)", "value": "", "stage": "codecs", "error": str(exc)})
    codecs_by_plugin: dict[str, list[dict[str, Any]]] = {}
    for d in decls:
        codecs_by_plugin.setdefault(d.plugin_name, []).append(
            {"id": d.spec.id, "name": d.spec.name, "description": d.spec.description, "loader": d.spec.loader_text}
        )
    formats_by_plugin: dict[str, list[dict[str, Any]]] = {}
    try:
        from ..formats.registry import declared_formats  # late: imports no reader or writer

        for fd in declared_formats(pm)[0]:
            formats_by_plugin.setdefault(fd.plugin, []).append(
                {"name": fd.name, "extensions": list(fd.spec.extensions), "capabilities": list(fd.spec.capabilities), "description": fd.spec.description}
            )
    except Exception as exc:  # the report shows problems, it does not raise
        problems.append({"name": "(format registry)", "value": "", "stage": "formats", "error": f"{type(exc).__name__}: {exc}"})
    plugins = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np_: np_[0]):
        if plugin is None:  # blocked name
            continue
        source = dict(pm.sources.get(name) or {"kind": "registered", "value": describe_plugin(plugin), "dist": None})
        plugins.append(
            {
                "name": name,
                "source": source,
                "object": describe_plugin(plugin),
                "codecs": codecs_by_plugin.get(name, []),
                "formats": formats_by_plugin.get(name, []),
            }
        )
    return {
        "entry_point_group": ENTRY_POINT_GROUP,
        "plugins": plugins,
        "failures": [f.as_dict() for f in pm.failures] + problems,
        "notes": list(pm.notes),
    }


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _source_text(source: dict[str, Any]) -> str:
    kind = source.get("kind") or "?"
    value = source.get("value") or ""
    dist = source.get("dist")
    text = f"{kind}: {value}" if value else kind
    return f"{text} [{dist}]" if dist else text


def format_plugins_report(report: dict[str, Any]) -> str:
    """The report as human-readable tables (plugins, codecs, formats, failures)."""
    out: list[str] = []
    plugins = report.get("plugins", [])
    out.append(f"Plugins (entry point group {report.get('entry_point_group', ENTRY_POINT_GROUP)!r}):")
    rows = [
        [
            p["name"],
            _source_text(p.get("source", {})),
            ", ".join(f"{c['id']}:{c['name']}" for c in p.get("codecs", [])) or "-",
            ", ".join(str(f.get("name", f)) if isinstance(f, dict) else str(f) for f in p.get("formats", [])) or "-",
        ]
        for p in plugins
    ]
    out += _table(["NAME", "SOURCE", "CODECS", "FORMATS"], rows) if rows else ["  (none)"]

    out.append("")
    out.append("Codecs:")
    codec_rows = sorted(
        ([str(c["id"]), c["name"], p["name"], c.get("description", "")] for p in plugins for c in p.get("codecs", [])),
        key=lambda r: int(r[0]),
    )
    out += _table(["ID", "NAME", "PLUGIN", "DESCRIPTION"], codec_rows) if codec_rows else ["  (none)"]

    formats = [(p["name"], f) for p in plugins for f in p.get("formats", [])]
    out.append("")
    out.append("Formats:")
    out += (
        [
            f"  {f['name']} ({', '.join(f.get('extensions', [])) or '-'}; {','.join(f.get('capabilities', []))}) [{name}]"
            if isinstance(f, dict)
            else f"  {f} ({name})"
            for name, f in formats
        ]
        if formats
        else ["  (none registered)"]
    )

    failures = report.get("failures", [])
    out.append("")
    if failures:
        out.append("Failed plugins (skipped):")
        out += _table(
            ["NAME", "VALUE", "STAGE", "ERROR"],
            [[f.get("name", ""), f.get("value", ""), f.get("stage", ""), f.get("error", "")] for f in failures],
        )
    else:
        out.append("Failed plugins: none")
    for note in report.get("notes", []):
        out.append(f"Note: {note}")
    return "\n".join(out)
