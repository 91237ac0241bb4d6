"""Helpers shared by the built-in formats: IIDs as JSON and as text names,
image sizes, label maps, sidecar files, atomic writes.  Light imports only."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote, unquote_to_bytes

import numpy as np

from ..errors import IIDError, IIDFormatError, IIDLimitError
from ..iidfile import IIDFile
from ..masks import check_pixels
from ..writer import atomic_write

__all__ = [
    "bytes_to_json",
    "bytes_from_json",
    "iid_name",
    "iid_from_name",
    "image_shape",
    "canvas_shape",
    "entry_groups",
    "label_map",
    "entries_from_label_map",
    "write_json",
    "read_json",
    "write_bytes",
    "sidecar_path",
    "as_files",
]

SIDECAR_SUFFIX = ".iid.json"


# -- IIDs ---------------------------------------------------------------------


def bytes_to_json(value: bytes) -> dict[str, Any]:
    """``{"hex": ..., "text": ...}``: hex is exact, text (UTF-8, or ``None``)
    is for people.  Readers use ``hex`` and fall back to ``text``."""
    try:
        text: str | None = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"hex": value.hex(), "text": text}


def bytes_from_json(value: Any, what: str) -> bytes:
    """Inverse of :func:`bytes_to_json`; also accepts a plain string (UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        if isinstance(value.get("hex"), str):
            try:
                return bytes.fromhex(value["hex"])
            except ValueError:
                raise IIDFormatError(f"{what}: 'hex' is not hexadecimal: {value['hex']!r:.60}") from None
        if isinstance(value.get("text"), str):
            return value["text"].encode("utf-8")
    if value is None:
        return b""
    raise IIDFormatError(f"{what}: expected {{'hex': ...}} or a string, got {value!r:.60}")


_SAFE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%/#")


def _name_part(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return quote(value, safe=_SAFE_ASCII)
    return "".join(c if c.isprintable() and c not in "%/#" else quote(c.encode("utf-8"), safe="") for c in text)


def iid_name(address: bytes, domain: bytes) -> str:
    """A readable, reversible text name of an IID (used where a format holds
    only names, e.g. medmask label mappings).

    ``address`` alone when the domain is empty, else ``domain/address``;
    each part is its UTF-8 text with ``%``, ``/``, ``#`` and non-printable
    characters percent-encoded (bytes that are not UTF-8 are percent-encoded
    whole).  ``iid_from_name`` inverts it; a ``#suffix`` (added to keep names
    unique) is ignored.
    """
    return _name_part(address) if not domain else f"{_name_part(domain)}/{_name_part(address)}"


def iid_from_name(name: str) -> tuple[bytes, bytes]:
    """``(address, domain)`` of a name made by :func:`iid_name` (or any text:
    ``"liver"`` gives ``(b"liver", b"")``)."""
    name = name.split("#", 1)[0]
    if "/" in name:
        domain, address = name.split("/", 1)
        return unquote_to_bytes(address), unquote_to_bytes(domain)
    return unquote_to_bytes(name), b""


# -- geometry -----------------------------------------------------------------


def image_shape(f: IIDFile) -> tuple[int, int] | None:
    """``(height, width)`` from the metadata (``meta["image"]["height"/"width"]``,
    else top-level ``height``/``width``), or ``None``."""
    meta = f.meta.data
    if not isinstance(meta, dict):
        return None
    for holder in (meta.get("image"), meta):
        if isinstance(holder, dict):
            h, w = holder.get("height"), holder.get("width")
            if type(h) is int and type(w) is int and h >= 0 and w >= 0:
                return h, w
    return None


def canvas_shape(f: IIDFile, boxes: np.ndarray | None = None) -> tuple[int, int]:
    """The image size to draw ``f`` on: the metadata's size, grown to hold
    every bbox (so nothing is ever cut)."""
    if boxes is None:
        boxes, _ = f._heads(f._all_keys())
    h, w = image_shape(f) or (0, 0)
    if len(boxes):
        h = max(h, int(boxes[:, 2].max()))
        w = max(w, int(boxes[:, 3].max()))
    return h, w


def entry_groups(f: IIDFile) -> dict[int, list[str]]:
    """key -> names of the groups holding it (group table order)."""
    out: dict[int, list[str]] = {}
    for name in f.groups:
        for k in f.groups.keys(name).tolist():
            out.setdefault(int(k), []).append(name)
    return out


def groups_to_json(f: IIDFile) -> dict[str, list[int]]:
    return {name: [int(k) for k in f.groups.keys(name)] for name in f.groups}


def groups_from_json(f: IIDFile, groups: Any, what: str) -> None:
    if groups is None:
        return
    if not isinstance(groups, dict):
        raise IIDFormatError(f"{what}: 'groups' must be an object of name -> keys, got {type(groups).__name__}")
    for name, keys in groups.items():
        if not isinstance(keys, list) or not all(type(k) is int for k in keys):
            raise IIDFormatError(f"{what}: group {name!r} must list integer keys")
        try:
            f.groups.add(name, keys)
        except KeyError as exc:
            raise IIDFormatError(f"{what}: group {name!r}: {exc.args[0] if exc.args else exc}") from None


# -- label maps -----------------------------------------------------------------

OVERLAP_POLICIES = ("error", "first", "last")


def label_map(
    f: IIDFile,
    entries: Sequence[Any],
    labels: Sequence[int],
    shape: tuple[int, int],
    overlap: str,
    dtype: Any = np.uint32,
    what: str = "label map",
) -> np.ndarray:
    """Paint ``entries`` with ``labels`` on a ``shape`` canvas.

    ``overlap``: ``"error"`` refuses two entries sharing a pixel (naming
    both), ``"first"`` keeps the earlier entry's label there, ``"last"`` the
    later one's.
    """
    if overlap not in OVERLAP_POLICIES:
        raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, got {overlap!r}")
    check_pixels(shape[0], shape[1], what)
    canvas = np.zeros(shape, dtype=dtype)
    owner: dict[int, Any] = {}
    for entry, label in zip(entries, labels):
        minr, minc, maxr, maxc = entry.seg.bbox
        mask = entry.seg.mask()
        if not mask.any():
            continue
        view = canvas[minr:maxr, minc:maxc]
        taken = mask & (view != 0)
        if taken.any():
            if overlap == "error":
                r, c = np.argwhere(taken)[0]
                other = owner[int(view[r, c])]
                raise IIDLimitError(
                    f"{what}: entries {other.key} ({_show(other)}) and {entry.key} ({_show(entry)}) overlap "
                    f"(e.g. pixel row {minr + r}, column {minc + c}; {int(taken.sum())} pixels): one label per pixel "
                    "cannot hold both. Choose overlap='first' or overlap='last' (lossy), or a format that keeps "
                    "overlaps (png-masks, medmask archive, COCO)"
                )
            if overlap == "first":
                mask = mask & ~taken
        view[mask] = label
        owner[int(label)] = entry
    return canvas


def _show(entry: Any) -> str:
    iid = entry.iid
    return f"{iid.domain!r}/{iid.address[:24]!r}"


def label_bboxes(canvas: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Tight bbox of every non-zero label present, ascending: scipy's
    ``find_objects``, one pass over the canvas (``np.unique`` would sort
    every pixel; a 360-megapixel label map takes seconds either way, but
    minutes and gigabytes that way)."""
    from scipy import ndimage

    top = int(canvas.max()) if canvas.size else 0
    if top <= 0:
        return {}
    arr = canvas if canvas.dtype.kind in "iu" and canvas.dtype.itemsize < 8 else canvas.astype(np.int64)
    return {
        label: (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
        for label, sl in enumerate(ndimage.find_objects(arr, max_label=top), 1)
        if sl is not None
    }


def entries_from_label_map(canvas: np.ndarray) -> list[tuple[int, tuple[int, int, int, int], np.ndarray]]:
    """``(label, tight bbox, mask)`` for every non-zero label, ascending."""
    return [(label, box, canvas[box[0] : box[2], box[1] : box[3]] == label) for label, box in label_bboxes(canvas).items()]


def crop_label(canvas: np.ndarray, label: int, bbox: Sequence[int], what: str) -> np.ndarray:
    minr, minc, maxr, maxc = (int(v) for v in bbox)
    if not (0 <= minr <= maxr <= canvas.shape[0] and 0 <= minc <= maxc <= canvas.shape[1]):
        raise IIDFormatError(f"{what}: bbox {tuple(bbox)} lies outside the {canvas.shape[0]} x {canvas.shape[1]} image")
    return canvas[minr:maxr, minc:maxc] == label


# -- files --------------------------------------------------------------------------


@contextlib.contextmanager
def library_errors(what: str) -> Iterator[None]:
    """Errors of a third-party reader (Pillow, medmask) on a damaged file as
    :class:`IIDFormatError` naming ``what``.

    A damaged file reaches those libraries' own parsers, which raise what
    they happen to (``OSError``, ``ValueError``, ``TypeError``,
    ``UnicodeDecodeError``, zstd errors...), and ``MemoryError`` when a
    damaged header declares a size they then allocate: nothing was
    allocated, and the file is at fault, so it is reported as such too.
    """
    try:
        yield
    except IIDError:
        raise
    except MemoryError:
        raise IIDFormatError(f"{what}: the file declares more data than memory holds (damaged?)") from None
    except Exception as exc:
        raise IIDFormatError(f"{what}: cannot be read: {type(exc).__name__}: {exc}") from exc


def write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path: str, obj: Any) -> None:
    data = json.dumps(obj, ensure_ascii=False, indent=1, allow_nan=False).encode("utf-8")
    write_bytes(path, data)


def read_json(path: str, what: str) -> Any:
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IIDFormatError(f"{what} {path!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise IIDFormatError(f"{what} {path!r} nests too deeply") from None


def sidecar_path(path: str) -> str:
    """``labels.png`` -> ``labels.png.iid.json``."""
    return os.fspath(path) + SIDECAR_SUFFIX


def drop_sidecar(path: str) -> None:
    """Remove a sidecar left by an earlier write (it would describe another file)."""
    try:
        os.unlink(sidecar_path(path))
    except FileNotFoundError:
        pass


def as_files(obj: Any) -> list[IIDFile]:
    if isinstance(obj, IIDFile):
        return [obj]
    items = list(obj)
    for item in items:
        if not isinstance(item, IIDFile):
            raise TypeError(f"expected IIDFile objects, got {type(item).__name__}")
    return items


def entries_of(f: IIDFile) -> list[Any]:
    return f.fetch(everything=True)


def sidecar_entry(entry: Any, label: int | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "key": entry.key,
        "domain": bytes_to_json(entry.iid.domain),
        "address": bytes_to_json(entry.iid.address),
        "bbox": list(entry.seg.bbox),
    }
    if label is not None:
        d["label"] = int(label)
    d.update(extra)
    return d


def check_bbox(value: Any, what: str) -> tuple[int, int, int, int]:
    if not isinstance(value, list) or len(value) != 4 or not all(type(v) is int and v >= 0 for v in value):
        raise IIDFormatError(f"{what}: bbox must be 4 non-negative integers (minr, minc, maxr, maxc), got {value!r:.60}")
    minr, minc, maxr, maxc = value
    if maxr < minr or maxc < minc:
        raise IIDFormatError(f"{what}: bbox {value} is inverted")
    return minr, minc, maxr, maxc


Callback = Callable[..., Any]
