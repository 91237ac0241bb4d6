"""PNG formats (Pillow).

``png-labels`` — one label map for the whole image plus a sidecar JSON
-----------------------------------------------------------------------
``labels.png`` holds one integer label per pixel (0 = background); entry
``key`` is painted with label ``key + 1``.  The bit depth is the smallest
that holds every label: 8-bit grayscale up to 255 entries, 16-bit grayscale
(Pillow mode ``I;16``) up to 65,535, and above that 24-bit RGB with
``label = R * 65536 + G * 256 + B`` (up to 16,777,215 entries; more is
refused).  ``bit_depth=16`` (or 8/24) forces one.  The sidecar
``labels.png.iid.json`` maps labels to IIDs and keeps what a label map cannot:
every entry's bbox (so empty masks and loose bboxes survive), groups and
metadata.  A label map holds one entry per pixel, so overlapping entries are
refused with an error naming both, unless ``overlap="first"`` (the earlier
entry keeps shared pixels) or ``overlap="last"`` is chosen; those are lossy
and the sidecar records the policy.

Reading a PNG without a sidecar imports any label map (modes ``1``, ``L``,
``P``, ``I;16``, ``I``, ``RGB`` as above): one entry per non-zero label with
its tight bbox, address = the label as decimal text, empty domain.

``png-masks`` — a folder of 1-bit PNGs plus ``index.json``
---------------------------------------------------------
One 1-bit PNG per entry (``000000.png`` ...), the size of its bbox, placed by
the index; overlaps are kept.  An entry with an empty bbox has no PNG
(``"file": null``).  ``index.json`` lists per entry its key, IID (``hex`` and
``text``), bbox, file and groups, and the groups and metadata of the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import tempfile
import threading
from typing import Any, Iterator

import numpy as np

from ..errors import IIDFormatError, IIDLimitError
from ..iidfile import IIDFile
from ..masks import check_pixels
from . import _common as c

__all__ = [
    "read_labels",
    "write_labels",
    "probe_png",
    "read_masks",
    "write_masks",
    "probe_masks",
    "LABELS_FORMAT",
    "MASKS_FORMAT",
]

LABELS_FORMAT = "iidschema-png-labels"
MASKS_FORMAT = "iidschema-png-masks"
INDEX_NAME = "index.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_DEPTH_LIMIT = {8: 0xFF, 16: 0xFFFF, 24: 0xFFFFFF}
_ENCODING = {8: "gray8", 16: "gray16", 24: "rgb24"}


def _png_bytes(img: Any, compress_level: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# -- png-labels -------------------------------------------------------------------


def probe_png(path: str) -> str | None:
    if os.path.isdir(path):
        return "is a folder, not a PNG file"
    with open(path, "rb") as fh:
        head = fh.read(8)
    return None if head == PNG_SIGNATURE else f"not a PNG file (starts with {head[:8]!r})"


def write_labels(f: IIDFile, path: str, *, overlap: str = "error", bit_depth: Any = "auto", compress_level: int = 6, sidecar: bool = True) -> None:
    from PIL import Image

    entries = c.entries_of(f)
    n = len(entries)
    if bit_depth == "auto":
        depth = next((d for d in (8, 16, 24) if n <= _DEPTH_LIMIT[d]), None)
        if depth is None:
            raise IIDLimitError(f"png-labels: {n} entries need more than 24 bits per pixel (at most 16,777,215 labels); use png-masks or COCO")
    else:
        depth = int(bit_depth)
        if n > _DEPTH_LIMIT[depth]:
            raise IIDLimitError(f"png-labels: {n} entries do not fit {depth}-bit labels (at most {_DEPTH_LIMIT[depth]}); use bit_depth='auto'")
    boxes = np.array([e.seg.bbox for e in entries], dtype=np.int64).reshape(-1, 4)
    height, width = c.canvas_shape(f, boxes)
    labels = [e.key + 1 for e in entries]
    dtype = {8: np.uint8, 16: np.uint16}.get(depth, np.uint32)  # (the canvas is as wide as the labels)
    canvas = c.label_map(f, entries, labels, (max(height, 1), max(width, 1)), overlap, dtype, what="png-labels")
    if depth in (8, 16):
        img = Image.fromarray(canvas)
    else:
        # R, G, B = bytes 2, 1, 0 of each little-endian uint32 label: one
        # copy of the bytes (shifting and stacking made five label-sized
        # temporaries: 8 GB for a 360-megapixel image).
        rgb = np.ascontiguousarray(canvas.astype("<u4", copy=False).view(np.uint8).reshape(*canvas.shape, 4)[:, :, 2::-1])
        img = Image.fromarray(rgb)
    data = _png_bytes(img, compress_level)
    if sidecar:
        groups = c.entry_groups(f)
        doc = {
            "format": LABELS_FORMAT,
            "version": 1,
            "image": {"height": height, "width": width},
            "encoding": _ENCODING[depth],
            "overlap": overlap,
            "entries": [c.sidecar_entry(e, label, groups=groups.get(e.key, [])) for e, label in zip(entries, labels)],
            "groups": c.groups_to_json(f),
            "meta": f.meta.data,
        }
        c.write_json(c.sidecar_path(path), doc)
    else:
        c.drop_sidecar(path)
    c.write_bytes(path, data)


#: Serialises the change of Pillow's process-wide decompression-bomb limit.
_PIL_LIMIT = threading.Lock()


def _png_size(path: str) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, or None if it is not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return height, width


@contextlib.contextmanager
def _open_png(path: str) -> Iterator[Any]:
    """``Image.open`` of a label map, bounded by iidschema's own limit
    (:data:`iidschema.masks.MAX_MASK_PIXELS`, checked on the PNG's header
    before anything is decoded) instead of Pillow's decompression-bomb limit
    (179 Mpx), which would refuse label maps iidschema writes: a
    19 000 x 19 000 image of 100 000 segments is 360 Mpx."""
    from PIL import Image

    size = _png_size(path)
    if size is None:
        with Image.open(path) as img:
            yield img
        return
    check_pixels(size[0], size[1], f"png-labels {path!r}")
    with _PIL_LIMIT:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None if old is None else max(old, size[0] * size[1])
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    with img:
        yield img


def _label_array(img: Any, path: str) -> tuple[np.ndarray, str]:
    mode = img.mode
    if mode in ("1", "L", "P"):
        return np.asarray(img, dtype=np.uint8).astype(np.uint32), "gray8"
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise IIDFormatError(f"png-labels: {path!r} has negative labels")
        return arr.astype(np.uint32), "gray16"
    if mode == "RGB":
        # label = R << 16 | G << 8 | B: the bytes copied into a little-endian
        # uint32 canvas (bytes 2, 1, 0), with no wider temporaries.
        rgb = np.asarray(img, dtype=np.uint8)
        labels = np.zeros(rgb.shape[:2], dtype="<u4")
        labels.view(np.uint8).reshape(*rgb.shape[:2], 4)[..., 2::-1] = rgb
        return labels.astype(np.uint32, copy=False), "rgb24"
    raise IIDFormatError(f"png-labels: {path!r} is a {mode} image; a label map is mode 1, L, P, I;16, I or RGB")


def read_labels(path: str, *, sidecar: Any = None) -> IIDFile:
    side = c.sidecar_path(path)
    use = os.path.exists(side) if sidecar is None else bool(sidecar)
    if sidecar and not os.path.exists(side):
        raise IIDFormatError(f"png-labels: sidecar {side!r} not found (sidecar=True)")
    with c.library_errors(f"png-labels {path!r}"), _open_png(path) as img:
        img.load()
        canvas, encoding = _label_array(img, path)
    f = IIDFile()
    if not use:
        for label, bbox, mask in c.entries_from_label_map(canvas):
            f.add(str(label).encode(), b"", bbox, mask)
        f.meta.data = {"image": {"height": int(canvas.shape[0]), "width": int(canvas.shape[1])}, "source": os.path.basename(path)}
        return f
    doc = c.read_json(side, "png-labels sidecar")
    what = f"png-labels sidecar {side!r}"
    if not isinstance(doc, dict) or doc.get("format") != LABELS_FORMAT:
        raise IIDFormatError(f"{what} is not an {LABELS_FORMAT} document (its 'format' is {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("encoding", encoding) != encoding and not (encoding == "gray8" and doc.get("encoding") == "gray16"):
        raise IIDFormatError(f"{what}: says {doc.get('encoding')!r} but the PNG is {encoding}")
    items = doc.get("entries")
    if not isinstance(items, list):
        raise IIDFormatError(f"{what}: 'entries' must be a list")
    for i, item in enumerate(items):
        where = f"{what} entry {i}"
        if not isinstance(item, dict) or type(item.get("label")) is not int:
            raise IIDFormatError(f"{where}: needs an integer 'label'")
        bbox = c.check_bbox(item.get("bbox"), where)
        mask = c.crop_label(canvas, item["label"], bbox, where)
        f.add(c.bytes_from_json(item.get("address"), where + " address"), c.bytes_from_json(item.get("domain"), where + " domain"), bbox, mask)
    c.groups_from_json(f, doc.get("groups"), what)
    f.meta.data = doc.get("meta", {})
    return f


# -- png-masks --------------------------------------------------------------------


def probe_masks(path: str) -> str | None:
    index = os.path.join(path, INDEX_NAME)
    if not os.path.isdir(path):
        return "not a folder"
    if not os.path.isfile(index):
        return f"folder has no {INDEX_NAME}"
    return None


def _prepare_folder(path: str) -> None:
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"png-masks: {path!r} exists and is not a folder")
        if os.listdir(path) and probe_masks(path) is not None:
            raise FileExistsError(f"png-masks: {path!r} is a non-empty folder not written by iidschema; refusing to overwrite it")


def write_masks(f: IIDFile, path: str, *, compress_level: int = 6) -> None:
    from PIL import Image

    path = os.fspath(path).rstrip("/" + os.sep) or os.fspath(path)
    _prepare_folder(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    try:
        entries = c.entries_of(f)
        groups = c.entry_groups(f)
        items = []
        for e in entries:
            mask = e.seg.mask()
            name = None
            if mask.size:
                name = f"{e.key:06d}.png"
                with open(os.path.join(tmp, name), "wb") as fh:
                    fh.write(_png_bytes(Image.fromarray(np.ascontiguousarray(mask, dtype=bool)), compress_level))
            items.append(c.sidecar_entry(e, file=name, groups=groups.get(e.key, [])))
        height, width = c.canvas_shape(f, np.array([e.seg.bbox for e in entries], dtype=np.int64).reshape(-1, 4))
        doc = {
            "format": MASKS_FORMAT,
            "version": 1,
            "image": {"height": height, "width": width},
            "entries": items,
            "groups": c.groups_to_json(f),
            "meta": f.meta.data,
        }
        c.write_json(os.path.join(tmp, INDEX_NAME), doc)
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_masks(path: str) -> IIDFile:
    from PIL import Image

    index = os.path.join(path, INDEX_NAME)
    doc = c.read_json(index, "png-masks index")
    what = f"png-masks index {index!r}"
    if not isinstance(doc, dict) or doc.get("format") != MASKS_FORMAT:
        raise IIDFormatError(f"{what} is not an {MASKS_FORMAT} document")
    items = doc.get("entries")
    if not isinstance(items, list):
        raise IIDFormatError(f"{what}: 'entries' must be a list")
    f = IIDFile()
    root = os.path.realpath(path)
    for i, item in enumerate(items):
        where = f"{what} entry {i}"
        if not isinstance(item, dict):
            raise IIDFormatError(f"{where}: must be an object")
        bbox = c.check_bbox(item.get("bbox"), where)
        shape = (bbox[2] - bbox[0], bbox[3] - bbox[1])
        name = item.get("file")
        if name is None:
            if shape[0] and shape[1]:
                raise IIDFormatError(f"{where}: a {shape[0]} x {shape[1]} bbox needs a 'file'")
            mask = np.zeros(shape, dtype=bool)
        else:
            if not isinstance(name, str):
                raise IIDFormatError(f"{where}: 'file' must be a file name or null, got {name!r:.40}")
            file = os.path.realpath(os.path.join(path, name))
            if os.path.dirname(file) != root:
                raise IIDFormatError(f"{where}: file {name!r} is not inside the folder")
            check_pixels(shape[0], shape[1], f"{where}: mask")
            # (missing, a folder, not an image, damaged: an IIDFormatError naming it)
            with c.library_errors(f"{where}: {name!r}"), Image.open(file) as img:
                if img.size != (shape[1], shape[0]):
                    raise IIDFormatError(f"{where}: {name} is {img.size[1]} x {img.size[0]}, bbox says {shape[0]} x {shape[1]}")
                mask = np.asarray(img.convert("1"), dtype=bool)
        group = item.get("groups")
        f.add(c.bytes_from_json(item.get("address"), where + " address"), c.bytes_from_json(item.get("domain"), where + " domain"), bbox, mask)
        if "groups" not in doc and isinstance(group, list):
            for g in group:
                f.groups.add(str(g), [len(f) - 1])
    c.groups_from_json(f, doc.get("groups"), what)
    f.meta.data = doc.get("meta", {})
    return f
