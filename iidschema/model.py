"""In-memory objects: IIDs, regions, segments and entries.

Attribute names follow iidfile 0.2.0 (``entry.key``, ``entry.iid.address``,
``entry.iid.domain``, ``entry.seg.bbox``, ``entry.seg.area``,
``entry.seg.mask()``, ``entry.seg.regions()``) so that code written for the
reference keeps working.  Region masks are decoded only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .codecs import get_codec
from .masks import check_pixels, compose_mask, split_regions

if TYPE_CHECKING:  # pragma: no cover
    from .adding import AddedColumns
    from .bulk import IIDBatch, SegmentBatch
    from .iidfile import IIDFile

__all__ = ["IID", "Region", "Regions", "Segment", "Entry", "BBox"]

BBox = tuple[int, int, int, int]


def bbox_to_xywh(bbox: BBox, center: bool = False) -> tuple[float, float, float, float]:
    minr, minc, maxr, maxc = bbox
    x, y, w, h = minc, minr, maxc - minc, maxr - minr
    if center:
        return x + w / 2.0, y + h / 2.0, w, h
    return x, y, w, h


def bboxes_intersect(a: BBox, b: BBox) -> bool:
    """Half-open boxes share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class IID:
    """An Individual IDentifier: raw ``address`` bytes in a ``domain``.

    A zero-length domain is ``b""`` (iidfile 0.2.0 returned ``None``).
    """

    __slots__ = ("key", "address", "domain")

    def __init__(self, address: bytes, domain: bytes = b"", key: int | None = None):
        self.key = key
        self.address = address
        self.domain = domain

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IID):
            return NotImplemented
        return (self.address, self.domain) == (other.address, other.domain)

    def __hash__(self) -> int:
        return hash((self.address, self.domain))

    def __repr__(self) -> str:
        return f"IID(address={self.address!r}, domain={self.domain!r})"


class Region:
    """One 8-connected component of a segment: absolute bbox + encoded pixels.

    ``mask`` (bool, shape of the bbox) is decoded from ``payload`` with the
    codec ``codec`` on first access, and kept.
    """

    __slots__ = ("bbox", "codec", "payload", "_mask")

    def __init__(self, bbox: BBox, mask: np.ndarray | None = None, *, codec: int = 0, payload: bytes | memoryview | None = None):
        self.bbox = tuple(int(v) for v in bbox)
        self.codec = codec
        self.payload = payload
        self._mask = mask

    @classmethod
    def raw(cls, bbox: BBox, codec: int, payload: bytes) -> "Region":
        """A region straight from a reader (values already checked ints)."""
        self = cls.__new__(cls)
        self.bbox, self.codec, self.payload, self._mask = bbox, codec, payload, None
        return self

    @property
    def shape(self) -> tuple[int, int]:
        minr, minc, maxr, maxc = self.bbox
        return (maxr - minr, maxc - minc)

    def decode(self) -> np.ndarray:
        """The region's mask, decoded now and not kept (unless already kept).

        The library's own paths (composing segment masks, queries, saving)
        use this, so that decoding a segment costs one region at a time: a
        small file may hold many overlapping regions that each decode to the
        size limit, and keeping them all would multiply memory.
        """
        if self._mask is not None:
            return self._mask
        check_pixels(*self.shape, "region")
        return get_codec(self.codec).decode(self.payload, self.shape)

    @property
    def mask(self) -> np.ndarray:
        """The region's mask (bool, shape of its bbox), decoded on first access and kept."""
        if self._mask is None:
            self._mask = self.decode()
        return self._mask

    def encoded(self, codec: int) -> bytes | memoryview:
        """The payload in ``codec``, re-encoding only when it differs."""
        if self.payload is not None and self.codec == codec:
            return self.payload
        return get_codec(codec).encode(self.decode())

    def bbox_xywh(self, center: bool = False):
        return bbox_to_xywh(self.bbox, center)

    def __repr__(self) -> str:
        return f"Region(bbox={self.bbox})"


class Regions(list):
    """The regions of a segment.  A list that is also callable (``seg.regions()``
    returns the list, as in iidfile 0.2.0)."""

    def __call__(self) -> "Regions":
        return self


class Segment:
    """A binary mask placed on the image by ``bbox`` (minr, minc, maxr, maxc;
    max exclusive), stored as regions.  ``area`` is the stored pixel count.

    ``components`` says whether the regions are exactly the mask's
    8-connected components (as version 0 requires); a version-1 file may
    hold several components in one region.

    A segment built by :meth:`IIDFile.add` keeps its mask (``source``) and
    splits it into regions only when they are asked for: writing version 1
    usually stores a small segment as one region and never needs the split,
    which makes ``add()`` cheap.
    """

    __slots__ = ("key", "bbox", "area", "_regions", "components", "source", "_batch", "_bi")

    def __init__(
        self,
        key: int | None,
        bbox: BBox,
        area: int,
        regions: Regions | None = None,
        components: bool = True,
        source: np.ndarray | None = None,
    ):
        if regions is None and source is None:
            raise ValueError("a segment needs its regions or its mask")
        self.key = key
        self.bbox = tuple(int(v) for v in bbox)
        self.area = int(area)
        self._regions = regions
        self.components = components
        self.source = source
        # A segment read by the bulk path (iidschema.bulk) takes its regions
        # and decoded mask from its batch, on first use.
        self._batch: "SegmentBatch | None" = None
        self._bi = 0

    @classmethod
    def from_added(cls, key: int, bbox: BBox, area: int, source: np.ndarray) -> "Segment":
        """A segment for :meth:`IIDFile.add` (``bbox`` a checked tuple of
        ints, ``source`` the entry's own bool mask): no conversions, since
        ``add()`` runs once per entry."""
        self = cls.__new__(cls)
        self.key, self.bbox, self.area, self.source = key, bbox, area, source
        self._regions, self.components, self._batch, self._bi = None, True, None, 0
        return self

    @property
    def regions(self) -> Regions:
        """The regions (8-connected components for a segment built from a mask)."""
        if self._regions is None:
            if self._batch is not None:
                self._regions = self._batch.regions(self._bi)
                return self._regions
            assert self.source is not None
            self._regions = Regions(Region(b, m) for b, m in split_regions(self.source, (self.bbox[0], self.bbox[1])))
        return self._regions

    @property
    def shape(self) -> tuple[int, int]:
        minr, minc, maxr, maxc = self.bbox
        return (maxr - minr, maxc - minc)

    def mask(self, bbox: BBox | None = None) -> np.ndarray:
        """The segment mask (bool, shape of ``self.bbox``), or its crop to ``bbox``
        (image coordinates, as in iidfile 0.2.0)."""
        batch = self._batch
        full = batch.mask(self._bi) if batch is not None else None  # the bulk-read fast path
        if full is None:
            full = self._full_mask()
        if bbox is None:
            return full
        minr, minc, maxr, maxc = bbox
        y, x = self.bbox[0], self.bbox[1]
        return full[max(0, minr - y) : max(0, maxr - y), max(0, minc - x) : max(0, maxc - x)]

    def _full_mask(self) -> np.ndarray:
        """A fresh array of the whole mask, from its source or its regions."""
        if self.source is not None:
            return self.source.copy()  # never hand out the segment's own array
        regs = self.regions
        if len(regs) == 1 and regs[0].bbox == self.bbox:
            # The common case (one region over the whole bbox): no composing.
            full = regs[0].decode()
            return full.copy() if full is regs[0]._mask else full
        return compose_mask(self.bbox, ((r.bbox, r.decode()) for r in regs))

    def covers(self, row: int, col: int) -> bool:
        """True when the mask has pixel (row, col) set."""
        for r in self.regions:
            minr, minc, maxr, maxc = r.bbox
            if minr <= row < maxr and minc <= col < maxc and r.decode()[row - minr, col - minc]:
                return True
        return False

    def intersects_bbox(self, bbox: BBox) -> bool:
        """True when at least one mask pixel lies inside ``bbox``."""
        if not bboxes_intersect(self.bbox, bbox):
            return False
        minr, minc, maxr, maxc = bbox
        for r in self.regions:
            if not bboxes_intersect(r.bbox, bbox):
                continue
            rminr, rminc = r.bbox[0], r.bbox[1]
            crop = r.decode()[max(0, minr - rminr) : max(0, maxr - rminr), max(0, minc - rminc) : max(0, maxc - rminc)]
            if crop.any():
                return True
        return False

    def intersects_segment(self, other: "Segment | Entry") -> int:
        """Number of pixels set in both masks."""
        if isinstance(other, Entry):
            other = other.seg
        if not bboxes_intersect(self.bbox, other.bbox):
            return 0
        r0, c0 = max(self.bbox[0], other.bbox[0]), max(self.bbox[1], other.bbox[1])
        r1, c1 = min(self.bbox[2], other.bbox[2]), min(self.bbox[3], other.bbox[3])
        box = (r0, c0, r1, c1)
        return int(np.count_nonzero(self._read(box) & other._read(box)))

    def _read(self, bbox: BBox) -> np.ndarray:
        """The mask cropped to ``bbox`` for reading only: a view of the
        bulk-decoded pixels when there are some (no copy), else :meth:`mask`."""
        batch = self._batch
        full = batch.view(self._bi) if batch is not None else None
        if full is None:
            return self.mask(bbox)
        minr, minc, maxr, maxc = bbox
        y, x = self.bbox[0], self.bbox[1]
        return full[max(0, minr - y) : max(0, maxr - y), max(0, minc - x) : max(0, maxc - x)]

    def bbox_xywh(self, center: bool = False):
        return bbox_to_xywh(self.bbox, center)

    def bbox_polygon(self) -> list[tuple[float, float]]:
        x, y, w, h = self.bbox_xywh()
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]

    def __repr__(self) -> str:
        return f"Segment(key={self.key}, bbox={self.bbox}, area={self.area}, regions={len(self.regions)})"


class Entry:
    """One LUT entry: a key, its IID and its segment.

    ``iid`` and ``seg`` are loaded from the file on first access if they
    were not fetched yet, so an entry is never half-usable.
    """

    __slots__ = ("key", "_iid", "_seg", "_loader", "_ib", "_ii", "_sb", "_si")

    def __init__(
        self, key: int, iid: IID | None = None, seg: Segment | None = None, loader: "IIDFile | None" = None,
        batch: "AddedColumns | None" = None, index: int = 0,
    ):
        self.key = key
        self._iid = iid
        self._seg = seg
        self._loader = loader
        # Set by a bulk fetch: the batches holding this entry's records
        # (already read and checked) and its index in each.  ``batch`` holds
        # both parts (IIDFile.add_many): they become objects on first access.
        self._ib: "IIDBatch | AddedColumns | None" = batch
        self._sb: "SegmentBatch | AddedColumns | None" = batch
        self._ii = self._si = index

    @property
    def iid(self) -> IID:
        if self._iid is None:
            if self._ib is not None:
                self._iid = self._ib.iid(self._ii)
            else:
                self._iid = self._loader._read_iid(self.key)  # type: ignore[union-attr]
        return self._iid

    @property
    def seg(self) -> Segment:
        if self._seg is None:
            if self._sb is not None:
                self._seg = self._sb.segment(self._si)
            else:
                self._seg = self._loader._read_segment(self.key)  # type: ignore[union-attr]
                self._loader._loaded_segs.add(self.key)  # type: ignore[union-attr]
        return self._seg

    @property
    def iid_loaded(self) -> bool:
        return self._iid is not None or self._ib is not None

    @property
    def seg_loaded(self) -> bool:
        return self._seg is not None or self._sb is not None

    def __repr__(self) -> str:
        parts = [f"key={self.key}"]
        if self.iid_loaded:
            parts.append(f"domain={self.iid.domain!r} address={self.iid.address!r}")
        if self.seg_loaded:
            parts.append(f"bbox={self.seg.bbox} area={self.seg.area}")
        return f"<Entry {' '.join(parts)}>"

