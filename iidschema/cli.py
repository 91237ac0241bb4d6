"""``iidschema`` command line.

Conventions: results on stdout, diagnostics on stderr, ``--json`` for
machines, exit status 0 on success, 1 when a file is bad, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from . import __version__
from .errors import IIDError

__all__ = ["main"]


def _show_bytes(value: bytes) -> str:
    """Bytes for humans: text when it is printable UTF-8, else 0x-hex."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()
    return text if text.isprintable() else "0x" + value.hex()


def _bytes_json(value: bytes) -> dict[str, Any]:
    try:
        text: str | None = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"hex": value.hex(), "text": text}


def cmd_info(args: argparse.Namespace) -> int:
    from .iidfile import IIDFile

    with IIDFile(args.file) as f:
        reader = f._reader
        assert reader is not None
        info = {
            "file": args.file,
            "size": reader.source.size,
            "version": f.version,
            "rformat": f.rformat,
            "entries": len(f),
            "sections": {name: {"offset": o, "length": n} for name, (o, n) in reader.sections().items()},
            "groups": {name: int(f.groups.keys(name).size) for name in f.groups},
            "meta": f.meta.data,
        }
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    print(f"{info['file']}: .iid version {info['version']} (rformat {info['rformat']}), {info['size']} bytes, {info['entries']} entries")
    print("sections:")
    for name, sec in info["sections"].items():
        print(f"  {name:<14} offset {sec['offset']:>10}  length {sec['length']:>10}")
    print(f"groups ({len(info['groups'])}):")
    for name, n in info["groups"].items():
        print(f"  {name!r}: {n} keys")
    print("meta:", json.dumps(info["meta"]))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .iidfile import IIDFile

    with IIDFile(args.file) as f:
        keys = f._group_keys(args.group) if args.group else f._all_keys()
        boxes, areas = f._heads(keys)
        rows = [
            (key, f[key].iid.domain, f[key].iid.address, tuple(box), area)
            for key, box, area in zip(keys.tolist(), boxes.tolist(), areas.tolist())
        ]
    if args.json:
        json.dump(
            [{"key": k, "domain": _bytes_json(d), "address": _bytes_json(a), "bbox": list(b), "area": ar} for k, d, a, b, ar in rows],
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    for k, d, a, b, ar in rows:
        print(f"{k}\t{_show_bytes(d)}\t{_show_bytes(a)}\t{b[0]},{b[1]},{b[2]},{b[3]}\t{ar}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins.report import format_plugins_report, plugins_report

    report = plugins_report()
    if args.json:
        json.dump(report, sys.stdout, indent=1, default=str)
        print()
    else:
        print(format_plugins_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iidschema", description="Read, write and inspect .iid segmentation files.")
    parser.add_argument("--version", action="version", version=f"iidschema {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="build a sample .iid from an embedded synthetic segmentation, reopen it lazily and query it")
    p.add_argument("-o", "--output", help="keep the sample at this path (default: a temporary file, removed afterwards)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="header, counts, groups, meta and section sizes of a file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("ls", help="one line per entry: key, domain, address, bbox, area")
    p.add_argument("file")
    p.add_argument("-g", "--group", action="append", help="only entries of this group (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("plugins", help="installed plugins, their codecs and formats, and any that failed to load")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)
    __import__("iidschema.validate", fromlist=["add_validate_parser"]).add_validate_parser(sub)
    __import__("iidschema.convert", fromlist=["add_format_commands"]).add_format_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (IIDError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"iidschema {args.command}: error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `iidschema ls f | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # keep the interpreter's final flush quiet
        return 0
    except OSError as exc:
        print(f"iidschema {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
