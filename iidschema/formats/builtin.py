"""The built-in formats, declared as an ordinary plugin.

This module is what the entry point ``builtin_formats`` (group
``iidschema``) names, exactly like a third-party format package would.  Its
hook returns declarations only: pycocotools, Pillow and medmask are imported
when a file is first read or written in their format.
"""

from __future__ import annotations

from typing import Any

from ..plugins.hookspecs import hookimpl
from .registry import FormatSpec, Option

__all__ = ["BUILTIN_FORMATS", "iidschema_formats", "read_iid", "write_iid"]


def _level(value: Any) -> str | None:
    return None if 0 <= value <= 9 else "PNG compression levels are 0 (none) to 9 (smallest)"


def _codec(value: Any) -> str | None:
    from ..codecs import resolve_codec

    try:
        resolve_codec(value)
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return str(exc)
    return None


def _medmask_codec(value: Any) -> str | None:
    from .medmask import check_codec

    return check_codec(value)


def _categories(value: Any) -> str | None:
    from .coco import check_categories

    return check_categories(value)


_OVERLAP = Option(
    "overlap",
    "error",
    "what to do where entries overlap: 'error' (refuse), 'first' or 'last' (that entry keeps the pixel; lossy)",
    str,
    choices=("error", "first", "last"),
)
_SIDECAR_W = Option("sidecar", True, "also write <file>.iid.json with bboxes, IIDs, groups and metadata (needed for an exact round trip)", bool)
_SIDECAR_R = Option("sidecar", None, "use <file>.iid.json: None = when present, True = required, False = ignore it", (bool, type(None)))
_Z = Option("z", None, "slice of a 3-D volume to read (None: the volume must have one slice)", (int, type(None)), check=lambda v: None if v >= 0 else "must be >= 0")
_MEDMASK_CODEC = Option("codec", "zstd", "medmask compression codec (medmask 0.1.3 has only 'zstd')", str, check=_medmask_codec)

BUILTIN_FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec(
        "iid",
        (".iid",),
        "the .iid format itself (opened lazily: entries are read on use)",
        reader="iidschema.formats.builtin:read_iid",
        writer="iidschema.formats.builtin:write_iid",
        write_options=(
            Option("version", None, "format version to write (default: the file's, or 1 for a new file; 2 is the most compact)",
                   (int, type(None)), choices=(None, 0, 1, 2)),
            Option("codec", "auto", "versions 1 and 2: mask codec, 'auto' (v1: smallest per region; v2: packbits in zstd blocks) "
                   "or a codec name/id", (str, int), check=_codec),
        ),
        lazy=True,
    ),
    FormatSpec(
        "coco",
        (".json",),
        "COCO instance segmentation: one dataset, one image per IIDFile, compressed RLE masks (pycocotools)",
        reader="iidschema.formats.coco:read_coco",
        writer="iidschema.formats.coco:write_coco",
        probe="iidschema.formats.coco:probe_coco",
        write_options=(
            Option(
                "categories",
                "domain",
                "category of each annotation: 'domain', 'group', 'single', a dict {domain: name or (id, name)} or a callable entry -> name",
                object,
                check=_categories,
            ),
            Option("indent", None, "JSON indentation (None: compact)", (int, type(None)), check=lambda v: None if v >= 0 else "must be >= 0"),
        ),
        multi=True,
        requires=("pycocotools",),
    ),
    FormatSpec(
        "png-labels",
        (".png",),
        "PNG label map (8/16-bit gray, 24-bit RGB above 65535 labels) + <file>.iid.json sidecar; no overlaps",
        reader="iidschema.formats.png:read_labels",
        writer="iidschema.formats.png:write_labels",
        probe="iidschema.formats.png:probe_png",
        read_options=(_SIDECAR_R,),
        write_options=(
            _OVERLAP,
            Option("bit_depth", "auto", "bits per label: 'auto' (smallest that fits), 8, 16 or 24 (RGB)", (str, int), choices=("auto", 8, 16, 24)),
            Option("compress_level", 6, "zlib level 0-9", int, check=_level),
            _SIDECAR_W,
        ),
        requires=("Pillow",),
    ),
    FormatSpec(
        "png-masks",
        (".masks",),
        "a folder of 1-bit PNGs, one per entry (bbox-sized), and index.json; keeps overlaps",
        reader="iidschema.formats.png:read_masks",
        writer="iidschema.formats.png:write_masks",
        probe="iidschema.formats.png:probe_masks",
        write_options=(Option("compress_level", 6, "zlib level 0-9", int, check=_level),),
        directory=True,
        requires=("Pillow",),
    ),
    FormatSpec(
        "medmask",
        (".msk",),
        "medmask MaskFile: one (1, H, W) label volume + <file>.iid.json sidecar; no overlaps",
        reader="iidschema.formats.medmask:read_msk",
        writer="iidschema.formats.medmask:write_msk",
        probe="iidschema.formats.medmask:probe_msk",
        read_options=(_Z, _SIDECAR_R),
        write_options=(_OVERLAP, _MEDMASK_CODEC, _SIDECAR_W),
        requires=("medmask",),
    ),
    FormatSpec(
        "medmask-archive",
        (".mska",),
        "medmask MaskArchive: non-overlapping layers (or one mask per entry) + <file>.iid.json sidecar",
        reader="iidschema.formats.medmask:read_mska",
        writer="iidschema.formats.medmask:write_mska",
        probe="iidschema.formats.medmask:probe_mska",
        read_options=(_Z, _SIDECAR_R),
        write_options=(
            Option("layout", "layers", "'layers': fewest non-overlapping label volumes; 'entry': one boolean volume per entry", str, choices=("layers", "entry")),
            _MEDMASK_CODEC,
            _SIDECAR_W,
        ),
        requires=("medmask",),
    ),
)


@hookimpl
def iidschema_formats() -> list[FormatSpec]:
    """Declare iid, coco, png-labels, png-masks, medmask and medmask-archive."""
    return list(BUILTIN_FORMATS)


# -- the native format ------------------------------------------------------------


def read_iid(path: str) -> Any:
    from ..iidfile import IIDFile

    return IIDFile(path)


def write_iid(f: Any, path: str, *, version: int | None = None, codec: Any = "auto") -> None:
    f.save(path, version=version, codec=codec)
