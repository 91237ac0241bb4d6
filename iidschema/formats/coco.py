"""COCO instance segmentation (``.json``), through pycocotools.

Writing: one COCO dataset from one or many IIDFiles, one image each.
--------------------------------------------------------------------
* ``images``: one per IIDFile, ``id`` 1, 2, ...; ``file_name`` from
  ``meta["image"]["file_name"]`` (else the ``.iid`` file's stem, else
  ``image_N``); ``height``/``width`` from ``meta["image"]`` grown to hold
  every bbox (else the largest bbox).
* ``annotations``: one per entry, ``segmentation`` a compressed RLE in COCO's
  column-major order decoding to the full ``[height, width]`` (built from the
  entry's crop, never from a full-image array), ``bbox`` the entry's bbox as
  ``[x, y, w, h]``, ``area`` its pixel count, ``iscrowd`` 0.
* ``categories`` (option ``categories``): ``"domain"`` (default: one category
  per IID domain, named by its UTF-8 text, ``0x<hex>`` when it is not text,
  ``"(no domain)"`` when empty), ``"group"`` (the entry's first group in
  group order, ``"(no group)"`` when none), ``"single"`` (one category,
  ``"object"``), a dict ``{domain (bytes or str): name or (id, name)}``, or a
  callable ``entry -> name or (id, name)``.  Ids not given are assigned 1, 2,
  ... in order of first use.
* lossless extras: every annotation has ``"iid": {"key", "domain",
  "address", "bbox", "groups"}`` (bytes as ``{"hex", "text"}``, bbox as
  ``[minr, minc, maxr, maxc]``) and every image ``"iid": {"groups", "meta"}``.

pycocotools keeps run lengths as uint32: an image over 4,294,967,295 pixels
(e.g. a whole-slide image) cannot be encoded, so such a file is refused with
an :class:`~iidschema.IIDLimitError` before pycocotools is called (crop or
tile the file, or use ``png-masks`` or ``.iid``).

Reading: a list of IIDFiles, one per image, in the dataset's image order.
-----------------------------------------------------------------------
Files written here come back exactly (IIDs, bboxes, masks, groups, meta).
Other datasets: polygons are rasterised with ``pycocotools.mask.frPyObjects``
(several polygons of one annotation merged), uncompressed and compressed RLEs
decoded; each annotation becomes an entry with address = its ``id`` as
decimal text, domain = its category's name, bbox = the tight bbox of its
pixels; groups = category names (plus ``"iscrowd"``); meta = ``{"image":
<image record>, "coco": {"annotations": [records without segmentation],
"categories": [...]}}``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from ..errors import IIDFormatError, IIDLimitError
from ..iidfile import IIDFile
from ..masks import check_pixels, exclusive_cumsum
from . import _common as c

__all__ = ["read_coco", "write_coco", "probe_coco", "rle_from_crop", "MAX_COCO_PIXELS", "CATEGORY_MODES", "check_categories"]

#: Largest image pycocotools can encode (run lengths are uint32).
MAX_COCO_PIXELS = 2**32 - 1
CATEGORY_MODES = ("domain", "group", "single")


def check_categories(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value in CATEGORY_MODES else f"must be one of {', '.join(CATEGORY_MODES)}, a dict or a callable"
    if isinstance(value, dict) or callable(value):
        return None
    return f"must be one of {', '.join(CATEGORY_MODES)}, a dict or a callable, got {type(value).__name__}"


# -- RLE ------------------------------------------------------------------------


def rle_counts(mask: np.ndarray, origin: tuple[int, int], size: tuple[int, int]) -> list[int]:
    """Uncompressed COCO RLE counts (column-major, zeros first) of ``mask``
    placed at ``origin`` (row, col) on a ``size`` (h, w) image, computed from
    the crop alone (:func:`rle_counts_many` of one mask)."""
    return rle_counts_many([np.asarray(mask, dtype=bool)], np.array([origin], dtype=np.int64).reshape(1, 2), size)[0]


def rle_counts_many(masks: Sequence[np.ndarray], origins: np.ndarray, size: tuple[int, int]) -> list[list[int]]:
    """:func:`rle_counts` of many masks (2-D bool arrays; ``origins`` an
    ``(n, 2)`` array of (row, col)), with a few numpy passes over all their
    pixels instead of a dozen numpy calls per mask.

    pycocotools encodes only full-image arrays, and no library turns crops
    placed on an image into COCO's column-major runs, hence this: each
    crop's columns, transposed and joined, give the runs' starts and ends
    inside the crop; a run start or end at row ``r`` of crop column ``c``
    is at ``(c0 + c) * h + r0 + r`` on the image.  A crop as tall as the
    image continues a run from the bottom of one column to the top of the
    next: there an end and a start fall on the same place, and both go.
    """
    h, w = size
    total = h * w
    n = len(masks)
    origins = np.asarray(origins, dtype=np.int64).reshape(n, 2)
    shapes = np.array([m.shape for m in masks], dtype=np.int64).reshape(n, 2)
    if ((origins < 0) | (origins + shapes > np.array([h, w]))).any():
        raise ValueError(f"COCO: a mask does not fit on the {h} x {w} image")
    out: list[list[int]] = []
    pixels = shapes[:, 0] * shapes[:, 1]
    cuts = [0, *(np.flatnonzero(np.diff(np.cumsum(pixels) // _RLE_CHUNK)) + 1).tolist(), n]
    for a, b in zip(cuts, cuts[1:]):
        out += _rle_counts_chunk(masks[a:b], origins[a:b], shapes[a:b], pixels[a:b], h, total)
    return out


#: Crop pixels taken together by :func:`rle_counts_many` (its temporary
#: arrays take about 20 bytes per pixel).
_RLE_CHUNK = 1 << 22


def _rle_counts_chunk(masks: Sequence[np.ndarray], origins: np.ndarray, shapes: np.ndarray, pixels: np.ndarray,
                      h: int, total: int) -> list[list[int]]:
    n = len(masks)
    mh = shapes[:, 0]
    base = exclusive_cumsum(pixels)
    # Every crop column-major, one after another.
    x = np.concatenate([np.asarray(m, dtype=bool).T.ravel() for m in masks]) if n else np.zeros(0, bool)
    # Column starts (mask i's column c starts at base[i] + c * mh[i]).
    ncols = np.where(pixels > 0, shapes[:, 1], 0)
    owner_col = np.repeat(np.arange(n), ncols)
    col_in_mask = np.arange(owner_col.size) - np.repeat(exclusive_cumsum(ncols)[:-1], ncols)
    col_start = base[owner_col] + col_in_mask * mh[owner_col]
    # Runs start or end where a pixel differs from the one above it in its
    # column (above the first row: False); runs reaching a column's last
    # pixel end just below it.
    prev = np.empty_like(x)
    if x.size:
        prev[0] = False
        prev[1:] = x[:-1]
        prev[col_start] = False
    inner = np.flatnonzero(x != prev)
    last = col_start + mh[owner_col] - 1
    bottom = last[x[last]] + 1 if x.size else last
    # Merge the two (both ascending): a bottom end at p comes before a start
    # at the same p (the next column's first pixel).
    at = np.searchsorted(inner, bottom, side="left") + np.arange(bottom.size)
    flat = np.empty(inner.size + bottom.size, dtype=np.int64)
    is_bottom = np.zeros(flat.size, dtype=bool)
    is_bottom[at] = True
    flat[is_bottom] = bottom
    flat[~is_bottom] = inner
    # To image positions.
    mask_of = np.searchsorted(base, flat, side="right") - 1
    mask_of[is_bottom] = np.searchsorted(base, flat[is_bottom] - 1, side="right") - 1
    q = flat - base[mask_of]
    hh = mh[mask_of]
    col = q // np.maximum(hh, 1)
    row = q - col * hh
    col[is_bottom] -= 1  # the place just below the column's last pixel
    row[is_bottom] = hh[is_bottom]
    pos = (origins[mask_of, 1] + col) * h + origins[mask_of, 0] + row
    # Full-height crops: an end and a start on one place cancel.
    if pos.size > 1:
        same = (pos[1:] == pos[:-1]) & (mask_of[1:] == mask_of[:-1])
        if same.any():
            keep = np.ones(pos.size, dtype=bool)
            keep[:-1] &= ~same
            keep[1:] &= ~same
            pos, mask_of = pos[keep], mask_of[keep]
    # Counts of mask i: its places between 0 and the image's end, differenced.
    per = np.bincount(mask_of, minlength=n)
    seg = exclusive_cumsum(per + 2)
    bounds = np.empty(int(seg[-1]), dtype=np.int64)
    bounds[seg[:-1]] = 0
    bounds[seg[1:] - 1] = total
    inside = np.ones(bounds.size, dtype=bool)
    inside[seg[:-1]] = False
    inside[seg[1:] - 1] = False
    bounds[inside] = pos
    counts = np.diff(bounds)
    # Mask i's counts are counts[seg[i] : seg[i + 1] - 1]; a mask reaching
    # the image's last pixel has no trailing zero run (pycocotools' form).
    stop = seg[1:] - 1
    stop -= (per > 0) & (counts[np.maximum(stop - 1, 0)] == 0)
    values = counts.tolist()
    if not total:
        return [[] for _ in range(n)]
    return [values[i:j] for i, j in zip(seg[:-1].tolist(), stop.tolist())]


def rle_from_crop(mask: np.ndarray, origin: tuple[int, int], size: tuple[int, int]) -> dict[str, Any]:
    """Compressed COCO RLE (``{"size": [h, w], "counts": str}``) of a crop,
    compressed by pycocotools."""
    return rle_from_crops([mask], np.array([origin], dtype=np.int64).reshape(1, 2), size)[0]


def rle_from_crops(masks: Sequence[np.ndarray], origins: np.ndarray, size: tuple[int, int]) -> list[dict[str, Any]]:
    """:func:`rle_from_crop` of many crops: counts from
    :func:`rle_counts_many`, compressed by one pycocotools call."""
    from pycocotools import mask as mask_utils

    h, w = size
    if h * w > MAX_COCO_PIXELS:
        raise IIDLimitError(_too_big(h, w))
    if not len(masks):
        return []
    counts = rle_counts_many(masks, origins, size)
    rles = mask_utils.frPyObjects([{"counts": c, "size": [h, w]} for c in counts], h, w)
    return [{"size": [h, w], "counts": r["counts"].decode("ascii")} for r in rles]


def _too_big(h: int, w: int, what: str = "image") -> str:
    return (
        f"COCO: {what} of {h} x {w} = {h * w:,} pixels is over {MAX_COCO_PIXELS:,}: pycocotools stores run lengths "
        "as uint32 and cannot encode it. Crop or tile the file first, or write png-masks or .iid, which have no such limit"
    )


# -- categories -----------------------------------------------------------------


def _text_name(value: bytes, empty: str) -> str:
    if not value:
        return empty
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()
    return text if text.isprintable() else "0x" + value.hex()


class _Categories:
    def __init__(self, mode: Any):
        self.mode = mode
        self.by_name: dict[str, int] = {}
        self.domain_of: dict[str, str] = {}
        self.used: set[int] = set()

    def _lookup(self, entry: Any, first_group: str | None) -> Any:
        mode = self.mode
        if mode == "domain":
            return _text_name(entry.iid.domain, "(no domain)")
        if mode == "group":
            return first_group if first_group is not None else "(no group)"
        if mode == "single":
            return "object"
        if isinstance(mode, dict):
            dom = entry.iid.domain
            for key in (dom, _text_name(dom, "")):
                if key in mode:
                    return mode[key]
            raise IIDLimitError(f"COCO: the categories dict has no entry for domain {dom!r} (entry {entry.key}); its keys: {list(mode)[:10]}")
        return mode(entry)

    def id_for(self, entry: Any, first_group: str | None) -> int:
        value = self._lookup(entry, first_group)
        if isinstance(value, dict):
            value = (value.get("id"), value.get("name"))
        if isinstance(value, tuple):
            cid, name = value
            if not isinstance(name, str) or (cid is not None and (type(cid) is not int or cid < 1)):
                raise IIDLimitError(f"COCO: category {value!r} must be (positive int id, name)")
        elif isinstance(value, str):
            cid, name = None, value
        else:
            raise IIDLimitError(f"COCO: a category is a name or (id, name), got {value!r}")
        known = self.by_name.get(name)
        if known is not None:
            if cid is not None and cid != known:
                raise IIDLimitError(f"COCO: category {name!r} given ids {known} and {cid}")
            return known
        if cid is None:
            cid = 1
            while cid in self.used:
                cid += 1
        elif cid in self.used:
            other = next(n for n, i in self.by_name.items() if i == cid)
            raise IIDLimitError(f"COCO: category id {cid} given to both {other!r} and {name!r}")
        self.by_name[name] = cid
        self.used.add(cid)
        self.domain_of.setdefault(name, _text_name(entry.iid.domain, ""))
        return cid

    def records(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "supercategory": self.domain_of.get(n, "")} for n, i in sorted(self.by_name.items(), key=lambda t: t[1])]


# -- writing ----------------------------------------------------------------------


def _file_name(f: IIDFile, index: int) -> str:
    meta = f.meta.data
    if isinstance(meta, dict) and isinstance(meta.get("image"), dict) and isinstance(meta["image"].get("file_name"), str):
        return meta["image"]["file_name"]
    if f.fpath:
        return os.path.splitext(os.path.basename(f.fpath))[0]
    return f"image_{index}"


def build_dataset(files: list[IIDFile], categories: Any = "domain") -> dict[str, Any]:
    cats = _Categories(categories)
    images, annotations = [], []
    ann_id = 0
    for i, f in enumerate(files, 1):
        entries = c.entries_of(f)
        boxes = np.array([e.seg.bbox for e in entries], dtype=np.int64).reshape(-1, 4)
        h, w = c.canvas_shape(f, boxes)
        if h * w > MAX_COCO_PIXELS:
            raise IIDLimitError(_too_big(h, w, f"image {i} ({_file_name(f, i)})"))
        groups = c.entry_groups(f)
        images.append(
            {"id": i, "file_name": _file_name(f, i), "height": h, "width": w, "iid": {"groups": c.groups_to_json(f), "meta": f.meta.data}}
        )
        segmentations, areas = _segmentations(f, entries, boxes, (h, w))
        for e, rle, area in zip(entries, segmentations, areas):
            minr, minc, maxr, maxc = e.seg.bbox
            ann_id += 1
            names = groups.get(e.key, [])
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": i,
                    "category_id": cats.id_for(e, names[0] if names else None),
                    "segmentation": rle,
                    "area": area,
                    "bbox": [minc, minr, maxc - minc, maxr - minr],
                    "iscrowd": 0,
                    "iid": {
                        "key": e.key,
                        "domain": c.bytes_to_json(e.iid.domain),
                        "address": c.bytes_to_json(e.iid.address),
                        "bbox": [minr, minc, maxr, maxc],
                        "groups": names,
                    },
                }
            )
    return {
        "info": {"description": "written by iidschema", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": cats.records(),
    }


def _segmentations(f: IIDFile, entries: list[Any], boxes: np.ndarray, size: tuple[int, int]) -> tuple[list[dict[str, Any]], list[int]]:
    """The compressed RLE and the pixel count of every entry's mask: masks
    decoded as columns (:meth:`IIDFile.masks`) about :data:`_MASKS_CHUNK`
    pixels at a time, encoded together (:func:`rle_from_crops`)."""
    keys = np.fromiter((e.key for e in entries), np.int64, len(entries))
    pixels = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cuts = [0, *(np.flatnonzero(np.diff(np.cumsum(pixels) // _MASKS_CHUNK)) + 1).tolist(), keys.size]
    rles: list[dict[str, Any]] = []
    areas: list[int] = []
    for a, b in zip(cuts, cuts[1:]):
        if a == b:
            continue
        cols = f.masks(keys=keys[a:b])
        masks = list(cols)
        rles += rle_from_crops(masks, cols.bboxes[:, :2], size)
        areas += [int(np.count_nonzero(m)) for m in masks]
    return rles, areas


#: Mask pixels decoded at once by :func:`write_coco` (bounds its memory).
_MASKS_CHUNK = 1 << 24


def write_coco(files: Any, path: str, *, categories: Any = "domain", indent: int | None = None) -> None:
    dataset = build_dataset(c.as_files(files), categories)
    data = json.dumps(dataset, ensure_ascii=False, indent=indent, allow_nan=False).encode("utf-8")
    c.write_bytes(path, data)


# -- reading ----------------------------------------------------------------------


def probe_coco(path: str) -> str | None:
    if os.path.isdir(path):
        return "is a folder"
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return "not a JSON object"
    return None


#: Polygon coordinates may lie this far beyond twice the image's size (real
#: polygons lie on or near their image; pycocotools' cost follows their length).
_POLYGON_MARGIN = 1024


def _segmentation_counts(seg: Any, h: int, w: int, where: str) -> np.ndarray:
    """The segmentation's uncompressed RLE counts on the ``h`` x ``w`` image
    (column-major, zeros first; int64, checked to sum to ``h * w``).
    Polygons are rasterised by pycocotools (to a compressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        if not seg:
            return np.array([h * w], dtype=np.int64)
        polys = [p for p in seg if isinstance(p, list)]
        if len(polys) != len(seg) or not all(len(p) >= 6 and len(p) % 2 == 0 for p in polys):
            raise IIDFormatError(f"{where}: polygons must be lists of at least 3 x, y pairs")
        if not all(type(v) in (int, float) for p in polys for v in p):
            raise IIDFormatError(f"{where}: polygon coordinates must be numbers")
        coords = np.array([v for p in polys for v in p], dtype=np.float64)
        # pycocotools walks every edge at 5x resolution in C ints: coordinates
        # far off the image would cost time (and overflow), never pixels.
        limit = 2 * max(h, w) + _POLYGON_MARGIN
        if not (np.isfinite(coords).all() and (np.abs(coords) <= limit).all()):
            raise IIDFormatError(f"{where}: polygon coordinates must be finite and within +-{limit} (twice the image, plus {_POLYGON_MARGIN})")
        if not h * w:  # (pycocotools writes out of bounds rasterising onto an empty image)
            return np.zeros(0, dtype=np.int64)
        counts = counts_from_string(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))["counts"], where)
    elif isinstance(seg, dict) and "counts" in seg:
        size = seg.get("size")
        if not isinstance(size, list) or size != [h, w]:
            raise IIDFormatError(f"{where}: RLE size {size!r} differs from the image's [{h}, {w}]")
        raw = seg["counts"]
        if isinstance(raw, list):
            if not all(type(v) is int and v >= 0 for v in raw):
                raise IIDFormatError(f"{where}: RLE counts must be non-negative integers")
            counts = np.array(raw, dtype=np.int64) if raw else np.zeros(0, dtype=np.int64)
        elif isinstance(raw, str):
            try:
                counts = counts_from_string(raw.encode("ascii"), where)
            except UnicodeEncodeError:
                raise IIDFormatError(f"{where}: compressed RLE counts must be ASCII") from None
        else:
            raise IIDFormatError(f"{where}: RLE counts must be a list or a string")
    else:
        raise IIDFormatError(f"{where}: segmentation must be polygons or an RLE, got {type(seg).__name__}")
    if (counts < 0).any():
        raise IIDFormatError(f"{where}: RLE counts must not be negative")
    if int(counts.sum()) != h * w:
        raise IIDFormatError(f"{where}: RLE counts sum to {int(counts.sum())}, not {h} x {w}")
    return counts


def counts_from_string(data: bytes, where: str = "COCO RLE") -> np.ndarray:
    """Uncompressed counts (int64) of a compressed COCO RLE string.

    pycocotools turns such a string only into a full-image array
    (``decode``): hundreds of megabytes per annotation on a large image,
    minutes for a file of many.  This reads the counts themselves, with
    numpy, as ``rleFrString`` of pycocotools' ``maskApi.c`` does: each count
    is a little-endian run of 5-bit groups, each a character ``48 + group``
    with bit 0x20 set while more groups follow, bit 0x10 of the last group
    the sign; from the fourth count on, each is stored as its difference
    from the count two before it.
    """
    if not data:
        return np.zeros(0, dtype=np.int64)
    x, _ = _rle_values(data, np.array([len(data) - 1]), where)
    counts = x.copy()
    counts[3::2] = np.cumsum(x[1::2])[1:]
    counts[4::2] = np.cumsum(x[2::2])[1:]
    return counts


def _rle_values(data: bytes, string_ends: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The values of the character groups of one or more compressed RLE
    strings joined in ``data`` (each string's last byte at ``string_ends``),
    before the deltas, and where each group starts in ``data``."""
    c = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 48
    if ((c < 0) | (c > 63)).any():
        raise IIDFormatError(f"{where}: compressed RLE counts hold a character outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[string_ends].any():
        raise IIDFormatError(f"{where}: compressed RLE counts end inside a count")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > 12:  # 60 bits: more would overflow pycocotools' 64-bit counts
        raise IIDFormatError(f"{where}: a compressed RLE count of more than 12 characters")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    return x, starts


#: Annotations whose masks are read together by the COCO reader.
_ANNOTATION_CHUNK = 4096


def _crops_of_strings(segs: list[Any], h: int, w: int, given: list[tuple[int, int, int, int]] | None
                      ) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray]] | None:
    """``(bboxes, masks)`` of many segmentations that are all compressed RLE
    strings of the image's size, read together: :func:`counts_from_string`
    and :func:`_crop_of_counts` over all of them, with a few numpy passes
    instead of about thirty numpy calls per annotation.  None when any is of
    another kind, or anything is wrong with any of them: the caller then
    reads them one at a time, which says which and why."""
    if not segs or not h * w:
        return None
    strings = []
    for seg in segs:
        if not (isinstance(seg, dict) and isinstance(seg.get("counts"), str) and isinstance(seg.get("size"), list)
                and seg["size"] == [h, w] and seg["counts"].isascii() and seg["counts"]):
            return None
        strings.append(seg["counts"].encode("ascii"))
    n = len(strings)
    lens = np.fromiter(map(len, strings), np.int64, n)
    try:
        x, starts = _rle_values(b"".join(strings), np.cumsum(lens) - 1, "")
    except IIDFormatError:
        return None
    # Counts of each string, m-th of its own: from the fourth on, the sum of
    # every other one (maskApi.c's deltas), a cumulative sum per string and parity.
    sid = np.searchsorted(exclusive_cumsum(lens)[1:], starts, side="right")
    per = np.bincount(sid, minlength=n)
    first = exclusive_cumsum(per)
    m = np.arange(x.size) - first[sid]
    counts = x.copy()
    for parity, lowest in ((1, 1), (0, 2)):
        sel = np.flatnonzero(((m & 1) == parity) & (m >= lowest))
        if sel.size:
            run = np.cumsum(x[sel])
            head = np.flatnonzero(np.diff(sid[sel], prepend=-1) != 0)  # each string's first of this parity
            base = np.repeat(run[head] - x[sel][head], np.diff(np.append(head, sel.size)))
            counts[sel] = run - base
    if (counts < 0).any() or (np.add.reduceat(counts, first[:-1]) != h * w).any():
        return None
    return _crops_of_counts(counts, first, h, w, given)


def _crops_of_counts(counts: np.ndarray, first: np.ndarray, h: int, w: int, given: list[tuple[int, int, int, int]] | None
                     ) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray]] | None:
    """``(bboxes, masks)`` of the segmentations whose full-image counts are
    ``counts[first[i] : first[i + 1]]`` (checked: non-negative, summing to
    ``h * w``): each mask over its ``given`` bbox (``None``: the tight bbox
    of its pixels; no pixels: ``(0, 0, 0, 0)``), made from the runs alone,
    never as a full-image array.  None when a given bbox leaves a pixel out
    (or leaves the image)."""
    n = first.size - 1
    per = np.diff(first)
    sid = np.repeat(np.arange(n), per)
    m = np.arange(counts.size) - first[sid]
    # True runs (odd places of each segmentation) cut at column boundaries;
    # where each count ends on the image (column-major).
    total = exclusive_cumsum(counts)
    ends_at = total[1:] - np.repeat(total[first[:-1]], per)
    odd = np.flatnonzero((m & 1) == 1)
    e, s_ = ends_at[odd], ends_at[odd] - counts[odd]
    keep = e > s_
    col, top, bottom, run_of = _cut_at_columns(s_[keep], e[keep], h)
    ann = sid[odd][keep][run_of]
    # Each annotation's bbox: given, or the tight box of its pieces.
    if given is not None:
        box = np.array(given, dtype=np.int64).reshape(n, 4)
    else:
        box = np.zeros((n, 4), dtype=np.int64)
        has = np.flatnonzero(np.bincount(ann, minlength=n))
        if has.size:
            at = np.searchsorted(ann, has)
            box[has, 0] = np.minimum.reduceat(top, at)
            box[has, 1] = col[at]
            box[has, 2] = np.maximum.reduceat(bottom, at)
            box[has, 3] = col[np.append(at[1:], col.size) - 1] + 1
    r0, c0, r1, c1 = box[ann].T
    if (box[:, 2] > h).any() or (box[:, 3] > w).any() or ((col < c0) | (col >= c1) | (top < r0) | (bottom > r1)).any():
        return None
    mh, mw = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    off = exclusive_cumsum(mh * mw)
    q0 = off[ann] + (col - c0) * mh[ann] + (top - r0)
    edges = np.empty(2 * q0.size + 2, dtype=np.int64)
    edges[0], edges[-1] = 0, off[-1]
    edges[1:-1:2], edges[2:-1:2] = q0, q0 + (bottom - top)
    values = np.zeros(edges.size - 1, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.diff(edges))
    masks = [flat[o : o + hh * ww].reshape(ww, hh).T for o, hh, ww in zip(off[:-1].tolist(), mh.tolist(), mw.tolist())]
    return [tuple(b) for b in box.tolist()], masks


def _cut_at_columns(s: np.ndarray, e: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-major runs ``[s, e)`` (non-empty) of an image ``h`` rows high,
    cut where they pass from one column into the next: ``(column, first
    row, end row, run)`` of each piece, in order."""
    first_col, last_col = s // h, (e - 1) // h
    spans = last_col - first_col + 1
    run = np.repeat(np.arange(s.size), spans)
    col = first_col[run] + np.arange(run.size) - np.repeat(np.cumsum(spans) - spans, spans)
    top = np.where(col == first_col[run], s[run] - first_col[run] * h, 0)
    bottom = np.where(col == last_col[run], e[run] - last_col[run] * h, h)
    return col, top, bottom, run


def _crop_of_counts(counts: np.ndarray, h: int, w: int, bbox: tuple[int, int, int, int] | None,
                    where: str) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """:func:`_crops_of_counts` of one segmentation; a pixel outside
    ``bbox`` is an error naming ``where``."""
    got = _crops_of_counts(counts, np.array([0, counts.size]), h, w, None if bbox is None else [bbox])
    if got is None:
        raise IIDFormatError(f"{where}: the segmentation has pixels outside its iid bbox {list(bbox or ())}")
    return got[0][0], got[1][0]


def read_coco(path: str) -> list[IIDFile]:
    doc = c.read_json(path, "COCO file")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise IIDFormatError(f"{path!r} is not a COCO dataset: it has no 'images' list")
    anns = doc.get("annotations", [])
    if not isinstance(anns, list):
        raise IIDFormatError(f"{path!r}: 'annotations' must be a list")
    categories = doc.get("categories", [])
    if not isinstance(categories, list):
        raise IIDFormatError(f"{path!r}: 'categories' must be a list")
    cats = {cat["id"]: cat for cat in categories if isinstance(cat, dict) and _is_id(cat.get("id"))}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in anns:
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")):
            raise IIDFormatError(f"{path!r}: every annotation needs an 'image_id' (an integer or a string)")
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in doc["images"]:
        if not isinstance(img, dict) or type(img.get("height")) is not int or type(img.get("width")) is not int:
            raise IIDFormatError(f"{path!r}: every image needs integer 'height' and 'width'")
        if img["height"] < 0 or img["width"] < 0 or not (img.get("id") is None or _is_id(img.get("id"))):
            raise IIDFormatError(f"{path!r}: image {img.get('id')!r:.40}: negative size, or an id that is not an integer or a string")
    ids = [img.get("id") for img in doc["images"]]
    orphans = set(by_image) - set(ids)
    if orphans:
        raise IIDFormatError(f"{path!r}: annotations refer to unknown image id(s) {sorted(map(str, orphans))[:5]}")
    return [_read_image(img, by_image.get(img.get("id"), []), cats, path) for img in doc["images"]]


def _is_id(value: Any) -> bool:
    """COCO ids are integers (strings accepted); anything else cannot key a lookup."""
    return (type(value) is int) or isinstance(value, str)


def _read_image(img: dict[str, Any], anns: list[dict[str, Any]], cats: dict[Any, Any], path: str) -> IIDFile:
    h, w = img["height"], img["width"]
    f = IIDFile()
    ours = isinstance(img.get("iid"), dict) and all(isinstance(a.get("iid"), dict) for a in anns)
    if ours:
        for j, ann in enumerate(anns):
            if type(ann["iid"].get("key", 0)) is not int:
                raise IIDFormatError(f"{path!r} annotation {ann.get('id', j)!r:.40}: its iid 'key' must be an integer")
        anns = sorted(anns, key=lambda a: a["iid"].get("key", 0))
    # What each annotation becomes, but its mask.
    wheres, addresses, domains, given, groups = [], [], [], [], []
    for j, ann in enumerate(anns):
        where = f"{path!r} annotation {ann.get('id', j)!r}"
        check_pixels(h, w, f"{where}: mask")
        wheres.append(where)
        if ours:
            info = ann["iid"]
            given.append(c.check_bbox(info.get("bbox"), where))
            addresses.append(c.bytes_from_json(info.get("address"), where))
            domains.append(c.bytes_from_json(info.get("domain"), where))
            groups.append(None)
        else:
            cat_id = ann.get("category_id")
            cat = cats.get(cat_id, {}) if _is_id(cat_id) else {}
            name = cat.get("name") if isinstance(cat.get("name"), str) else ""
            addresses.append(str(ann.get("id", j)).encode())
            domains.append(name.encode("utf-8"))
            groups.append((([name] if name else []) + (["iscrowd"] if ann.get("iscrowd") else [])) or None)
    # Masks, a chunk of annotations at a time: all compressed RLE strings
    # read together (the common case), else (or on any error, so that it is
    # reported as precisely) one annotation at a time.
    bboxes: list[tuple[int, int, int, int]] = []
    masks: list[np.ndarray] = []
    for lo in range(0, len(anns), _ANNOTATION_CHUNK):
        hi = min(lo + _ANNOTATION_CHUNK, len(anns))
        segs = [ann.get("segmentation") for ann in anns[lo:hi]]
        done = _crops_of_strings(segs, h, w, given[lo:hi] if ours else None)
        if done is None:
            done = ([], [])
            for j in range(lo, hi):
                counts = _segmentation_counts(segs[j - lo], h, w, wheres[j])
                bbox, mask = _crop_of_counts(counts, h, w, given[j] if ours else None, wheres[j])
                done[0].append(bbox)
                done[1].append(mask)
        bboxes += done[0]
        masks += done[1]
    if anns:
        f.add_many(addresses, domains, np.array(bboxes, dtype=np.int64).reshape(-1, 4), masks, groups=groups)
    if ours:
        c.groups_from_json(f, img["iid"].get("groups"), f"{path!r} image {img.get('id')!r}")
        f.meta.data = img["iid"].get("meta", {})
    else:
        used = {a.get("category_id") for a in anns if _is_id(a.get("category_id"))}
        f.meta.data = {
            "image": img,
            "coco": {
                "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in anns],
                "categories": [cats[k] for k in cats if k in used],
            },
        }
    return f
