"""medmask 0.1.3 files: ``.msk`` (``MaskFile``) and ``.mska`` (``MaskArchive``).

medmask stores 3-D label volumes (z, y, x) with a ``spacetransformer.Space``
and a ``{name: label}`` mapping.  A 2-D image is stored as shape
``(1, height, width)`` with the default space (spacing 1, origin 0).

Names: each entry's IID becomes the mapping name
:func:`~iidschema.formats._common.iid_name` (``address`` when the domain is
empty, else ``domain/address``, UTF-8 text with ``%``, ``/``, ``#`` and
non-printable characters percent-encoded; ``#<key>`` is appended when the
same IID occurs twice in one volume).  Labels are ``key + 1``.

``.msk`` (format ``medmask``): one label volume, so overlapping entries are
refused unless ``overlap="first"``/``"last"`` (lossy), as for png-labels.

``.mska`` (format ``medmask-archive``): several volumes sharing one space.
``layout="layers"`` (default) packs entries first-fit, in key order, into
the fewest label volumes in which no two entries overlap, named
``layer_000``, ``layer_001``, ...; a file without overlaps gives one volume.
``layout="entry"`` writes one boolean volume per entry, named
``entry_000000`` ..., mapping ``{iid name: 1}``.

medmask has no place for bboxes, groups or metadata, so the writers also
write a sidecar ``<file>.iid.json`` (option ``sidecar``, default on) with each
entry's key, label, volume and bbox, plus groups and metadata; with it the
round trip is exact.  Without a sidecar (any medmask file) every mapping name
becomes an entry (IID from the name, so ``"liver"`` is address ``b"liver"``,
empty domain) with the tight bbox of its voxels, in label order; archive
volumes become groups named after them.

medmask 0.1.3 facts this relies on (from its source, not its docstrings):
``MaskFile``'s header is 62 bytes (``<4s2B B 6Q 7x``, magic ``MSK1``) and
``MaskArchive``'s 90 bytes (``<4s2B B 7Q27x``, magic ``MSKA``); the only
codec is ``zstd``.  ``MaskArchive.add_segmask`` reserves only 200 spare bytes
of JSON index per new mask and overwrites the first data blob when an index
entry is larger (long names); the writer therefore sizes the index for all
masks before adding the first one.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any, Callable

import numpy as np

from ..errors import IIDFormatError, IIDLimitError
from ..iidfile import IIDFile
from ..masks import check_pixels
from . import _common as c

__all__ = ["read_msk", "write_msk", "read_mska", "write_mska", "probe_msk", "probe_mska", "medmask_codecs", "LAYOUTS"]

SIDECAR_FORMAT = "iidschema-medmask"
LAYOUTS = ("layers", "entry")


def medmask_codecs() -> list[str]:
    from medmask.compression import _codec_registry

    return sorted(_codec_registry)


def check_codec(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a codec name (str), got {type(value).__name__}"
    try:
        known = medmask_codecs()
    except ImportError:
        return None  # reported when writing
    return None if value.lower() in known else f"medmask 0.1.3 knows codec(s) {', '.join(known)}"


def _magic(path: str, magic: bytes) -> str | None:
    if os.path.isdir(path):
        return "is a folder"
    with open(path, "rb") as fh:
        head = fh.read(4)
    return None if head == magic else f"not a medmask file (magic {head!r}, expected {magic!r})"


def probe_msk(path: str) -> str | None:
    return _magic(path, b"MSK1")


def probe_mska(path: str) -> str | None:
    return _magic(path, b"MSKA")


def _dtype(max_label: int) -> Any:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_label <= np.iinfo(dt).max:
            return dt
    raise IIDLimitError(f"medmask: label {max_label} does not fit uint32")


def _names(entries: list[Any]) -> list[str]:
    seen: set[str] = set()
    out = []
    for e in entries:
        name = c.iid_name(e.iid.address, e.iid.domain)
        if name in seen:
            name = f"{name}#{e.key}"
        seen.add(name)
        out.append(name)
    return out


def _space(shape: tuple[int, int]) -> Any:
    from spacetransformer import Space

    return Space(shape=(1, shape[0], shape[1]))


def _sidecar(f: IIDFile, path: str, items: list[dict[str, Any]], shape: tuple[int, int], **extra: Any) -> None:
    doc = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "image": {"height": shape[0], "width": shape[1]},
        **extra,
        "entries": items,
        "groups": c.groups_to_json(f),
        "meta": f.meta.data,
    }
    c.write_json(c.sidecar_path(path), doc)


def _atomic(path: str, write: Any) -> None:
    """Let medmask write a temporary file beside ``path``, then rename it."""
    path = os.path.realpath(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    os.close(fd)
    os.unlink(tmp)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- .msk -------------------------------------------------------------------------


def write_msk(f: IIDFile, path: str, *, overlap: str = "error", codec: str = "zstd", sidecar: bool = True) -> None:
    from medmask import MaskFile, SegmentationMask

    entries = c.entries_of(f)
    height, width = c.canvas_shape(f)
    shape = (max(height, 1), max(width, 1))
    labels = [e.key + 1 for e in entries]
    dtype = _dtype(max(labels, default=0))
    canvas = c.label_map(f, entries, labels, shape, overlap, dtype, what="medmask")
    names = _names(entries)
    segmask = SegmentationMask(canvas[None], dict(zip(names, labels)), space=_space(shape))
    _atomic(path, lambda tmp: MaskFile(tmp, mode="w", codec=codec).write(segmask))
    if sidecar:
        items = [c.sidecar_entry(e, label, name=n) for e, label, n in zip(entries, labels, names)]
        _sidecar(f, path, items, (height, width), overlap=overlap)
    else:
        c.drop_sidecar(path)


def _volume(data: np.ndarray, path: str, z: int | None) -> np.ndarray:
    if data.ndim != 3:
        raise IIDFormatError(f"medmask: {path!r} holds a {data.ndim}-D array, expected (z, y, x)")
    if z is None:
        if data.shape[0] != 1:
            raise IIDFormatError(f"medmask: {path!r} is a 3-D volume of {data.shape[0]} slices; .iid holds 2-D images: pass z=<slice>")
        z = 0
    if not 0 <= z < data.shape[0]:
        raise IIDFormatError(f"medmask: slice z={z} outside 0..{data.shape[0] - 1}")
    arr = np.asarray(data[z])
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise IIDFormatError(f"medmask: {path!r} holds {arr.dtype} voxels, not integer labels")
    return arr


def _add_from_mapping(f: IIDFile, canvas: np.ndarray, mapping: dict[str, int], group: str | None = None) -> None:
    boxes = c.label_bboxes(canvas)
    pairs = sorted(((int(label), name) for name, label in mapping.items()), key=lambda t: t[0])
    named = {label for label, _ in pairs}
    pairs += [(label, str(label)) for label in boxes if label not in named]
    for label, name in pairs:
        address, domain = c.iid_from_name(name)
        box = boxes.get(label)
        if box is None:
            f.add(address, domain, (0, 0, 0, 0), np.zeros((0, 0), bool), group=group)
        else:
            f.add(address, domain, box, canvas[box[0] : box[2], box[1] : box[3]] == label, group=group)


def _read_sidecar(path: str) -> dict[str, Any] | None:
    side = c.sidecar_path(path)
    if not os.path.exists(side):
        return None
    doc = c.read_json(side, "medmask sidecar")
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT or not isinstance(doc.get("entries"), list):
        raise IIDFormatError(f"medmask sidecar {side!r} is not an {SIDECAR_FORMAT} document")
    return doc


def _from_sidecar(doc: dict[str, Any], names: list[str], load: Callable[[str], np.ndarray], path: str) -> IIDFile:
    """The entries a sidecar lists, cut from the volumes ``names`` of the
    medmask file.  Each volume is a whole-image array: ``load(name)`` gives
    one, and they are loaded one at a time (the crops are kept, the volume
    dropped before the next is loaded)."""
    what = f"medmask sidecar {c.sidecar_path(path)!r}"
    items = []
    for i, item in enumerate(doc["entries"]):
        where = f"{what} entry {i}"
        if not isinstance(item, dict) or type(item.get("label")) is not int:
            raise IIDFormatError(f"{where}: needs an integer 'label'")
        vol = item.get("volume")
        if vol is None and len(names) == 1:
            vol = names[0]
        if vol not in names:
            raise IIDFormatError(f"{where}: volume {vol!r} is not in the medmask file")
        bbox = c.check_bbox(item.get("bbox"), where)
        items.append((c.bytes_from_json(item.get("address"), where), c.bytes_from_json(item.get("domain"), where), bbox, vol, where))
    masks: list[Any] = [None] * len(items)
    by_volume: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_volume.setdefault(item[3], []).append(i)
    for vol, members in by_volume.items():
        canvas = load(vol)
        for i in members:
            masks[i] = c.crop_label(canvas, doc["entries"][i]["label"], items[i][2], items[i][4])
        del canvas
    f = IIDFile()
    if items:
        addresses, domains, boxes = (list(col) for col in zip(*(item[:3] for item in items)))
        f.add_many(addresses, domains, np.array(boxes, dtype=np.int64).reshape(-1, 4), masks)
    c.groups_from_json(f, doc.get("groups"), what)
    f.meta.data = doc.get("meta", {})
    return f


def _meta(path: str, shape: tuple[int, ...], space: Any) -> dict[str, Any]:
    try:
        space_json = json.loads(space.to_json()) if space is not None else None
    except Exception:  # pragma: no cover - exotic spaces
        space_json = None
    return {"image": {"height": int(shape[0]), "width": int(shape[1])}, "source": os.path.basename(path), "medmask": {"space": space_json}}


def read_msk(path: str, *, z: int | None = None, sidecar: Any = None) -> IIDFile:
    from medmask import MaskFile

    with c.library_errors(f"medmask file {path!r}"):
        segmask = MaskFile(path, mode="r").read()
    canvas = _volume(segmask.data, path, z)
    check_pixels(*canvas.shape, "medmask slice")
    doc = _read_sidecar(path) if sidecar is not False else None
    if sidecar and doc is None:
        raise IIDFormatError(f"medmask: sidecar {c.sidecar_path(path)!r} not found (sidecar=True)")
    if doc is not None:
        return _from_sidecar(doc, [""], lambda _: canvas, path)
    f = IIDFile()
    _add_from_mapping(f, canvas, dict(segmask.mapping.items()))
    f.meta.data = _meta(path, canvas.shape, segmask.space)
    return f


# -- .mska ------------------------------------------------------------------------


def _layers(entries: list[Any], shape: tuple[int, int]) -> list[list[int]]:
    """First-fit: indices of ``entries`` per layer, no two overlapping in a layer."""
    occupied: list[np.ndarray] = []
    layers: list[list[int]] = []
    for i, e in enumerate(entries):
        minr, minc, maxr, maxc = e.seg.bbox
        mask = e.seg.mask()
        for occ, members in zip(occupied, layers):
            if not (occ[minr:maxr, minc:maxc] & mask).any():
                occ[minr:maxr, minc:maxc] |= mask
                members.append(i)
                break
        else:
            occ = np.zeros(shape, dtype=bool)
            occ[minr:maxr, minc:maxc] |= mask
            occupied.append(occ)
            layers.append([i])
    return layers


def _entry_volume(entry: Any, shape: tuple[int, int]) -> np.ndarray:
    """One entry's mask on a whole-image canvas."""
    vol = np.zeros(shape, dtype=bool)
    minr, minc, maxr, maxc = entry.seg.bbox
    vol[minr:maxr, minc:maxc] = entry.seg.mask()
    return vol


def write_mska(f: IIDFile, path: str, *, layout: str = "layers", codec: str = "zstd", sidecar: bool = True) -> None:
    from medmask import MaskArchive, SegmentationMask

    entries = c.entries_of(f)
    height, width = c.canvas_shape(f)
    shape = (max(height, 1), max(width, 1))
    check_pixels(*shape, "medmask archive volume")
    space = _space(shape)
    labels = [e.key + 1 for e in entries]
    names = _names(entries)
    # Each volume is a whole-image array (a label map of up to 4 bytes per
    # pixel): they are made one at a time while the archive is written, so
    # that memory holds one, not all of them.
    plan: list[tuple[str, dict[str, int], Callable[[], np.ndarray]]] = []
    vol_of: dict[int, str] = {}
    if layout == "entry":
        for i, e in enumerate(entries):
            name = f"entry_{e.key:06d}"
            plan.append((name, {names[i]: 1}, functools.partial(_entry_volume, e, shape)))
            vol_of[i] = name
        labels = [1] * len(entries)
        if not entries:  # medmask cannot write an archive without a mask
            plan.append(("empty", {}, functools.partial(np.zeros, shape, dtype=bool)))
    elif layout == "layers":
        dtype = _dtype(max(labels, default=0))
        for n, members in enumerate(_layers(entries, shape) if entries else [[]]):
            sub = [entries[i] for i in members]
            name = f"layer_{n:03d}"
            paint = functools.partial(c.label_map, f, sub, [labels[i] for i in members], shape, "error", dtype,
                                      what="medmask archive layer")
            plan.append((name, {names[i]: labels[i] for i in members}, paint))
            for i in members:
                vol_of[i] = name
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    def write(tmp: str) -> None:
        archive = MaskArchive(tmp, mode="w", space=space, codec=codec)
        # Size the JSON index for every mask up front (medmask keeps 200 spare
        # bytes only, and a larger entry would overwrite the first data blob).
        index = [{"name": n, "offset": 2**63, "length": 2**63, "mapping": m} for n, m, _ in plan]
        archive.MAX_INDEX_LENGTH = max(MaskArchive.MAX_INDEX_LENGTH, len(json.dumps(index).encode("utf-8")) + 1024)
        for name, mapping, make in plan:
            vol = make()
            archive.add_segmask(SegmentationMask(vol[None], dict(mapping), space=space), name)
            del vol

    _atomic(path, write)
    if sidecar:
        items = [c.sidecar_entry(e, label, name=n, volume=vol_of[i]) for i, (e, label, n) in enumerate(zip(entries, labels, names))]
        _sidecar(f, path, items, (height, width), layout=layout)
    else:
        c.drop_sidecar(path)


def read_mska(path: str, *, z: int | None = None, sidecar: Any = None) -> IIDFile:
    from medmask import MaskArchive

    what = f"medmask archive {path!r}"
    with c.library_errors(what):
        archive = MaskArchive(path, mode="r")
        # Volumes are whole-image arrays: loaded one at a time (medmask's
        # read_all_masks would hold them all).
        names = list(archive.all_names())
        space = archive.space

    def load(name: str) -> Any:
        with c.library_errors(f"{what} volume {name!r}"):
            return archive.load_segmask(name)

    doc = _read_sidecar(path) if sidecar is not False else None
    if sidecar and doc is None:
        raise IIDFormatError(f"medmask: sidecar {c.sidecar_path(path)!r} not found (sidecar=True)")
    if doc is not None:
        return _from_sidecar(doc, names, lambda name: _volume(load(name).data, path, z), path)
    f = IIDFile()
    shape: tuple[int, ...] = (0, 0)
    for name in names:
        m = load(name)
        canvas = _volume(m.data, path, z)
        shape = canvas.shape
        _add_from_mapping(f, canvas, dict(m.mapping.items()), group=name)
        del m, canvas
    f.meta.data = _meta(path, shape, space)
    return f
