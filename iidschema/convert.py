"""Batch conversion between formats, and the ``convert``, ``formats`` and
``render`` commands.

``iidschema convert IN... OUT [--from F] [--to F] [-o KEY=VALUE ...] [-r KEY=VALUE ...]``

* The target format is ``--to``, else OUT's extension.
* A multi-image target (COCO) receives every image of every input in one
  file OUT.
* Otherwise one input giving one image is written to OUT; several inputs
  (or an input holding several images, or OUT an existing folder / ending
  in ``/``) are written into the folder OUT, one file per image named after
  its input (``a.iid`` -> ``OUT/a.png``; images of a COCO input are named
  ``<input>_<file_name stem>``).
* A failing file is reported (on stderr) and the batch goes on; the exit
  status is 1 when any failed.  A progress bar (tqdm, stderr) shows the
  batch unless ``-q``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from .batch import add_batch_arguments  # light: Dask is imported only when a batch runs

__all__ = ["convert", "ConvertResult", "parse_options", "add_format_commands"]


@dataclass
class ConvertResult:
    """What a conversion did: written paths and ``(input, error)`` failures."""

    written: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures



def parse_options(pairs: Sequence[str] | None, what: str = "-o") -> dict[str, Any]:
    """``["level=9", "overlap=first"]`` -> ``{"level": "9", "overlap": "first"}``
    (values stay text; each format's options convert them)."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    stem, ext = os.path.splitext(base)
    return stem or base or "out"


def _image_stem(f: Any, index: int) -> str:
    meta = f.meta.data
    if isinstance(meta, dict) and isinstance(meta.get("image"), dict) and isinstance(meta["image"].get("file_name"), str):
        name = os.path.splitext(os.path.basename(meta["image"]["file_name"]))[0]
        if name:
            return name
    return f"{index:04d}"


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return f"{exc}" if str(exc) else type(exc).__name__


def convert(
    inputs: Sequence[str],
    output: str,
    from_format: str | None = None,
    to_format: str | None = None,
    read_options: dict[str, Any] | None = None,
    write_options: dict[str, Any] | None = None,
    progress: bool = True,
    folder: bool | None = None,
) -> ConvertResult:
    """Convert ``inputs`` to ``output`` (see the module docstring).  Per-file
    errors are collected in the result, not raised; a bad target format or
    bad writer options raise at once, before anything is read.

    ``folder`` forces (or forbids) writing one output per input into the
    ``output`` folder; by default that happens for several inputs or when
    ``output`` is a folder."""
    from tqdm import tqdm

    from .formats.registry import get_registry, read, write

    target = get_registry().writer_for(output, to_format)
    target.options("write", dict(write_options or {}))  # fail early on bad options
    fmt = target.name
    ropts = dict(read_options or {})
    wopts = dict(write_options or {})
    result = ConvertResult()
    ext = target.spec.extensions[0] if target.spec.extensions else ""
    if folder is None:
        folder = len(inputs) > 1 or (
            not target.spec.directory and (os.path.isdir(output) or output.endswith(("/", os.sep)))
        )
    collected: list[Any] = []
    used: set[str] = set()

    def out_path(name: str) -> str:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        return os.path.join(output, candidate + ext)

    bar = tqdm(inputs, desc=f"converting to {fmt}", unit="file", file=sys.stderr, disable=not progress, leave=False)
    for path in bar:
        try:
            obj = read(path, from_format, **ropts)
        except Exception as exc:  # noqa: BLE001 - reported per file
            result.failures.append((path, _message(exc)))
            bar.write(f"iidschema convert: {path}: {_message(exc)}", file=sys.stderr)
            continue
        items = obj if isinstance(obj, list) else [obj]
        result.images += len(items)
        if target.spec.multi:
            collected.extend(items)
            continue
        if not folder and len(items) > 1:
            folder = True
        for i, item in enumerate(items):
            name = _stem(path) if len(items) == 1 else f"{_stem(path)}_{_image_stem(item, i)}"
            dest = out_path(name) if folder else output
            try:
                if folder:
                    os.makedirs(output, exist_ok=True)
                write(item, dest, format=fmt, **wopts)
                result.written.append(dest)
            except Exception as exc:  # noqa: BLE001 - reported per file
                where = path if len(items) == 1 else f"{path} (image {i})"
                result.failures.append((where, _message(exc)))
                bar.write(f"iidschema convert: {where}: {_message(exc)}", file=sys.stderr)
    bar.close()
    if target.spec.multi and collected:
        try:
            write(collected, output, format=fmt, **wopts)
            result.written.append(output)
        except Exception as exc:  # noqa: BLE001
            result.failures.append((output, _message(exc)))
    return result


class _ConvertOne:
    """One input's conversion, as a picklable callable for Dask workers."""

    def __init__(self, output: str, from_format: str | None, to_format: str | None,
                 read_options: dict[str, Any], write_options: dict[str, Any]):
        self.args = (output, from_format, to_format, read_options, write_options)

    def __call__(self, path: str) -> ConvertResult:
        output, from_format, to_format, ropts, wopts = self.args
        result = convert([path], output, from_format, to_format, ropts, wopts, progress=False, folder=True)
        if result.failures:
            raise RuntimeError("; ".join(why for _, why in result.failures))
        return result


def convert_batch(
    inputs: Sequence[str],
    output: str,
    from_format: str | None = None,
    to_format: str | None = None,
    read_options: dict[str, Any] | None = None,
    write_options: dict[str, Any] | None = None,
    progress: bool = True,
    scheduler: Any = "sync",
    workers: int | None = None,
) -> ConvertResult:
    """:func:`convert`, with the per-input work run by :func:`iidschema.batch.run_batch`
    (threads, processes or a Dask cluster).

    With ``scheduler="sync"``, or a target that collects every input into one
    file (COCO), this is :func:`convert`.  Otherwise each input is converted
    on its own into the ``output`` folder; inputs whose outputs would have the
    same name are refused before anything runs (they would overwrite each
    other on different workers).
    """
    from .batch import run_batch
    from .formats.registry import get_registry

    target = get_registry().writer_for(output, to_format)
    target.options("write", dict(write_options or {}))
    if scheduler in (None, "sync") or target.spec.multi or len(inputs) < 2:
        return convert(inputs, output, from_format, to_format, read_options, write_options, progress)
    stems = [_stem(p) for p in inputs]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"inputs with the same name would overwrite each other's output: {', '.join(clashes)}; "
                         "convert them separately or with --scheduler sync")
    os.makedirs(output, exist_ok=True)
    task = _ConvertOne(output, from_format, to_format or target.name,
                       dict(read_options or {}), dict(write_options or {}))
    batch = run_batch(task, list(inputs), scheduler, workers, progress, desc=f"converting to {target.name}")
    result = ConvertResult()
    for item in batch:
        if item.ok:
            result.written.extend(item.value.written)
            result.images += item.value.images
        else:
            result.failures.append((item.item, item.error))
    return result


# -- commands ---------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        print("iidschema convert: error: give at least one input and the output (IN... OUT)", file=sys.stderr)
        return 2
    try:
        ropts = parse_options(args.read_option, "-r")
        wopts = parse_options(args.option, "-o")
    except ValueError as exc:
        print(f"iidschema convert: error: {exc}", file=sys.stderr)
        return 2
    *inputs, output = args.paths
    try:
        result = convert_batch(inputs, output, args.from_format, args.to_format, ropts, wopts,
                               progress=not args.quiet, scheduler=args.scheduler, workers=args.workers)
    except ValueError as exc:
        print(f"iidschema convert: error: {exc}", file=sys.stderr)
        return 2
    for path, why in result.failures:
        print(f"FAILED {path}: {why}", file=sys.stderr)
    total = len(inputs)
    failed_inputs = len({p.split(" (image ")[0] for p, _ in result.failures if p != output})
    summary = f"converted {total - failed_inputs} of {total} input(s) ({result.images} image(s)) into {len(result.written)} output(s)"
    if result.failures:
        summary += f"; {len(result.failures)} failure(s)"
    print(summary, file=sys.stderr)
    return 0 if result.ok else 1


def cmd_formats(args: argparse.Namespace) -> int:
    from .formats.registry import formats, get_registry

    reg = get_registry()
    items = formats()
    if args.json:
        json.dump(
            {"config": reg.config.path, "config_origin": reg.config.origin, "reader_order": reg.plugin_order, "excluded_plugins": reg.excluded, "formats": items},
            sys.stdout,
            indent=1,
            default=repr,
        )
        print()
        return 0
    rows = [[d["name"], d["plugin"], ", ".join(d["extensions"]) + (" <folder>" if "directory" in d["capabilities"] else ""), ",".join(d["capabilities"]), d["description"]] for d in items]
    headers = ["FORMAT", "PLUGIN", "EXTENSIONS", "CAPABILITIES", "DESCRIPTION"]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:-1])]
    for r in [headers] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1])
    if args.verbose:
        for d in items:
            for side in ("read", "write"):
                for o in d[f"{side}_options"]:
                    choices = f" (one of {', '.join(map(repr, o['choices']))})" if o["choices"] else ""
                    print(f"  {d['name']} [{d['plugin']}] {side} option {o['name']}={o['default']!r}{choices}: {o['help']}")
    print(f"\n{reg.config.describe()}; reader order of plugins: {', '.join(reg.plugin_order) or '(none)'}")
    if reg.excluded:
        print(f"plugins not selected by 'libraries': {', '.join(reg.excluded)}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .formats.registry import read
    from .formats.render import render_file

    obj = read(args.file, args.from_format)
    if isinstance(obj, list):
        if not obj:
            print(f"iidschema render: error: {args.file} holds no image", file=sys.stderr)
            return 1
        if args.index is None and len(obj) > 1:
            print(f"iidschema render: error: {args.file} holds {len(obj)} images; choose one with --index", file=sys.stderr)
            return 2
        obj = obj[args.index or 0]
    h, w = render_file(obj, args.output, image=args.image, groups=args.group, keys=args.key, alpha=args.alpha, outline=not args.no_outline)
    print(f"wrote {args.output} ({w} x {h})", file=sys.stderr)
    return 0


def add_format_commands(subparsers: Any) -> None:
    """Add ``convert``, ``formats`` and ``render`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "convert",
        help="convert files between formats (iid, coco, png-labels, png-masks, medmask, ...)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="IN... OUT", help="input files, then the output file or folder")
    p.add_argument("--from", dest="from_format", metavar="F", help="input format (default: by extension, readers tried in order)")
    p.add_argument("--to", dest="to_format", metavar="F", help="output format (default: by OUT's extension)")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="writer option (repeatable), e.g. -o overlap=first")
    p.add_argument("-r", "--read-option", action="append", metavar="KEY=VALUE", help="reader option (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_batch_arguments(p)
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser("formats", help="readable and writable formats, their plugins, extensions and the reader order")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="also list every reader and writer option")
    p.set_defaults(func=cmd_formats)

    p = subparsers.add_parser("render", help="draw a file's segments (distinct colours, outlines) as a PNG, over the photo if given")
    p.add_argument("file", help="an .iid file (or anything a reader reads)")
    p.add_argument("-o", "--output", required=True, help="the PNG to write")
    p.add_argument("--image", metavar="PHOTO", help="draw over this image (its size is used)")
    p.add_argument("-g", "--group", action="append", help="only entries of this group (repeatable)")
    p.add_argument("-k", "--key", action="append", type=int, help="only this entry (repeatable)")
    p.add_argument("--from", dest="from_format", metavar="F", help="input format (default: by extension)")
    p.add_argument("--index", type=int, help="which image of a multi-image file (COCO)")
    p.add_argument("--alpha", type=float, default=0.45, help="fill opacity 0..1 (default 0.45)")
    p.add_argument("--no-outline", action="store_true", help="fill only")
    p.set_defaults(func=cmd_render)
