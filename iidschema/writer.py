"""Serialising entries, and replacing files atomically.

The header, metadata and groups are built by their construct declarations;
the per-entry records (millions of them) by ``struct`` packers and numpy
dtypes *derived* from the same declarations in :mod:`iidschema.schema`, so
there is no second copy of the layout here.
"""

from __future__ import annotations

import itertools
import operator
import os
import tempfile
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

import numpy as np

from . import schema
from .adding import AddedColumns
from .errors import IIDLimitError
from .masks import exclusive_cumsum, sorted_unique, split_regions, tight_bbox, tight_bboxes_of_runs
from .model import IID, Segment

__all__ = ["write_v0", "write_v1", "atomic_write", "check_meta"]

Record = tuple[IID, Segment]


def check_meta(meta: Any) -> bytes:
    """``meta`` as the JSON bytes a file stores (``json.dumps`` defaults).

    Raises ``TypeError`` naming the problem when it is not JSON-serialisable,
    before anything is written.
    """
    try:
        return schema.Meta0.build(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata is not JSON-serialisable: {exc}") from None


def _groups_v0(groups: Mapping[str, Iterable[int]], count: int) -> bytes:
    table, chunks, offset = [], [], 0
    for name, keys in groups.items():
        arr = sorted_unique(np.asarray(list(keys) if not isinstance(keys, np.ndarray) else keys, dtype=np.int64))
        if arr.size and (arr[0] < 0 or arr[-1] >= count):
            raise IIDLimitError(f"group {name!r} refers to key {int(arr[-1] if arr[-1] >= count else arr[0])}, file has {count} entries")
        data = arr.astype(schema.GROUP_KEY0_DTYPE).tobytes()  # ascending: deterministic output
        table.append({"name": name, "offset": offset, "length": len(data)})
        chunks.append(data)
        offset += len(data)
    return schema.Groups0.build({"table": table, "data": b"".join(chunks)})


def _components_v0(seg: Segment) -> Iterator[tuple[tuple[int, int, int, int], bytes]]:
    """Version-0 regions of ``seg``: its 8-connected components as packbits.

    Regions read from a version-1 file may hold several components; they are
    split again so that the output is exactly what iidfile 0.2.0 writes.
    """
    if seg.components:
        for region in seg.regions:
            yield region.bbox, bytes(region.encoded(0))
        return
    from .codecs import get_codec

    packbits = get_codec(0)
    for bbox, mask in split_regions(seg.mask(), (seg.bbox[0], seg.bbox[1])):
        yield bbox, bytes(packbits.encode(mask))


def _v0_packed_regions(packed: "_Packed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Version-0 regions of masks given by their packed stream (their
    8-connected components, as :func:`_components_v0` finds them one
    segment at a time): the number of regions of each
    mask, their absolute bboxes ((r, 4) int64) and their payloads (an object
    array of bytes), each mask's regions in raster order of their first
    pixel.  A mask that is certainly one component
    (:attr:`~iidschema.crops.CropRuns.single`) is its crop; the others'
    components come from their runs (:func:`~iidschema.components.components`)."""
    from .codecs.rle import select_runs
    from .components import components
    from .crops import crop_runs

    pm = packed.pm
    n = len(pm)
    cr = crop_runs(pm, single=True, true_runs=True)
    tight = cr.tight
    nonempty = tight[:, 0] >= 0
    one = np.flatnonzero(nonempty & cr.single)  # type: ignore[operator]
    rest = np.flatnonzero(nonempty & ~cr.single)  # type: ignore[operator]
    first, last, offsets = cr.true  # type: ignore[misc]
    run_first, rest_offsets = select_runs(first, offsets, rest)
    run_last, _ = select_runs(last, offsets, rest)
    comps = components(run_first, run_last, rest_offsets, pm.heights[rest], pm.widths[rest])
    counts = np.zeros(n, dtype=np.int64)
    counts[one] = 1
    counts[rest] = comps.counts
    start = exclusive_cumsum(counts)
    boxes = np.empty((int(start[-1]), 4), dtype=np.int64)
    payloads = np.empty(int(start[-1]), dtype=object)
    origin = packed.origin[:, [0, 1, 0, 1]]
    at = start[one]
    boxes[at] = tight[one] + origin[one]
    whole = (tight[one, 0] == 0) & (tight[one, 1] == 0) & (tight[one, 2] == pm.heights[one]) & (tight[one, 3] == pm.widths[one])
    if whole.any():
        payloads[at[whole]] = _objects(pm.payloads(one[whole]))
    if not whole.all():
        payloads[at[~whole]] = _objects(cr.packed(one[~whole]).payloads())
    if comps.counts.size:
        owner = np.repeat(rest, comps.counts)
        local = np.arange(owner.size, dtype=np.int64) - np.repeat(exclusive_cumsum(comps.counts)[:-1], comps.counts)
        at = start[owner] + local
        boxes[at] = comps.boxes + origin[owner]
        payloads[at] = _objects(comps.packed.payloads())
    return counts, boxes, payloads


def _v0_packed_regions_parallel(packed: "_Packed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_v0_packed_regions`, in two halves on two threads when worth
    it (:func:`_halves`; mostly numpy on large arrays, which releases the GIL)."""
    both = _halves(_v0_packed_regions, packed)
    if both is None:
        return _v0_packed_regions(packed)
    (c1, b1, p1), (c2, b2, p2) = both
    return np.concatenate((c1, c2)), np.concatenate((b1, b2)), np.concatenate((p1, p2))


def _v0_regions(segs: list[Segment]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_v0_packed_regions` of segments: those built by
    :meth:`IIDFile.add` (a source mask) from their packed stream, the others
    (read from a file) region by region (:func:`_components_v0`)."""
    from .codecs.packbits import pack_masks

    nb = len(segs)
    split = [j for j, seg in enumerate(segs) if seg.source is not None and seg.components] if _BULK else []
    counts = np.zeros(nb, dtype=np.int64)
    found = None
    if split:
        origin = np.fromiter(itertools.chain.from_iterable([segs[j].bbox for j in split]), np.int64, 4 * len(split)).reshape(-1, 4)
        pm = pack_masks([segs[j].source for j in split], origin[:, 2:] - origin[:, :2])
        found = _v0_packed_regions_parallel(_Packed(pm, origin[:, :2]))
        counts[split] = found[0]
    chosen = set(split)
    others = [j for j in range(nb) if j not in chosen]
    lists = [list(_components_v0(segs[j])) for j in others]
    counts[others] = [len(regions) for regions in lists]
    start = exclusive_cumsum(counts)
    boxes = np.empty((int(start[-1]), 4), dtype=np.int64)
    payloads = np.empty(int(start[-1]), dtype=object)
    if found is not None:
        sel = np.asarray(split, dtype=np.int64)
        at = np.repeat(start[sel], found[0]) + (np.arange(found[2].size, dtype=np.int64) - np.repeat(exclusive_cumsum(found[0])[:-1], found[0]))
        boxes[at] = found[1]
        payloads[at] = found[2]
    for j, regions in zip(others, lists):
        for k, (bbox, payload) in enumerate(regions):
            boxes[start[j] + k] = bbox
            payloads[start[j] + k] = payload
    return counts, boxes, payloads


def write_v0(
    out: BinaryIO,
    records: Iterable[Record],
    count: int,
    groups: Mapping[str, Iterable[int]],
    meta: Any,
    *,
    rformat: int = 0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write a version-0 file (the iidfile 0.2.0 layout) and return its size.

    Refuses, with :class:`IIDLimitError` and before writing a byte, what
    version 0 cannot hold: coordinates above 65535, areas or offsets above
    2**32 - 1.  Region payloads in another codec are transcoded to packbits.
    """
    if count > schema.MAX_U32:
        raise IIDLimitError(f"version 0 holds at most {schema.MAX_U32} entries, got {count}")
    iid_chunks: list[bytes] = []
    seg_chunks: list[bytes] = []
    iid_lens = np.zeros(count, dtype=np.int64)
    seg_lens = np.zeros(count, dtype=np.int64)
    n = 0
    seg_size, reg_size = _SEG_HEAD0_DTYPE.itemsize, _REGION_HEAD0_DTYPE.itemsize
    for batch in _batches(records):
        nb = len(batch)
        if n + nb > count:
            raise ValueError("more records than announced")
        if type(batch) is AddedColumns:
            cols: AddedColumns | None = batch
            addresses, domains = batch.addresses, batch.domains
            boxes, areas = batch.bboxes, batch.areas
        else:
            cols = None
            segs = [seg for _, seg in batch]
            addresses = [iid.address for iid, _ in batch]
            domains = [iid.domain for iid, _ in batch]
            boxes = np.fromiter(itertools.chain.from_iterable([seg.bbox for seg in segs]), np.int64, 4 * nb).reshape(nb, 4)
            areas = np.fromiter([seg.area for seg in segs], np.int64, nb)
        # The limits first, before any encoding: the first entry that does
        # not fit is named, as the one-by-one writer did.
        bad = (boxes > schema.MAX_COORD_V0).any(axis=1) | (boxes < 0).any(axis=1) | (areas > schema.MAX_U32)
        if bad.any():
            j = int(np.argmax(bad))
            key, bbox = n + j, tuple(boxes[j].tolist())
            if max(bbox) > schema.MAX_COORD_V0 or min(bbox) < 0:
                raise IIDLimitError(
                    f"entry {key}: bbox {bbox} does not fit version 0 (coordinates 0..{schema.MAX_COORD_V0}); save as version 1"
                )
            raise IIDLimitError(f"entry {key}: area {int(areas[j])} does not fit version 0 (uint32)")
        if cols is not None and _BULK:
            counts, rboxes, payloads = _v0_packed_regions_parallel(_Packed(cols.packed, boxes[:, :2]))
        else:
            counts, rboxes, payloads = _v0_regions(cols.segments() if cols is not None else segs)
        nr = payloads.size
        plens = np.fromiter(map(len, payloads.tolist()), np.int64, nr)
        if nr and (rboxes.max() > schema.MAX_COORD_V0 or rboxes.min() < 0 or plens.max() + reg_size > schema.MAX_U32):
            raise IIDLimitError("a region does not fit version 0 (uint16 coordinates, uint32 length); save as version 1")
        # Record heads for the whole batch in numpy; the records are one join
        # of the heads and payloads interleaved (segment head, then region
        # head and payload of each region).
        heads = np.zeros(nb, dtype=_SEG_HEAD0_DTYPE)
        heads["key"] = np.arange(n, n + nb)
        rheads = np.zeros(nr, dtype=_REGION_HEAD0_DTYPE)
        rheads["len"] = plens + reg_size
        for i, name in enumerate(("minr", "minc", "maxr", "maxc")):
            heads["bbox"][name] = boxes[:, i]
            rheads["bbox"][name] = rboxes[:, i]
        heads["area"] = areas
        first_region = exclusive_cumsum(counts)
        owner = np.repeat(np.arange(nb, dtype=np.int64), counts)
        at = 2 * np.arange(nr, dtype=np.int64) + owner + 1  # region heads; payloads follow
        parts = np.empty(nb + 2 * nr, dtype=object)
        parts[np.arange(nb, dtype=np.int64) + 2 * first_region[:-1]] = _objects(heads.view(f"V{seg_size}").tolist())
        parts[at] = _objects(rheads.view(f"V{reg_size}").tolist())
        parts[at + 1] = payloads
        seg_chunks.append(b"".join(parts.tolist()))
        del parts
        per_region = exclusive_cumsum(plens + reg_size)
        seg_lens[n : n + nb] = seg_size + per_region[first_region[1:]] - per_region[first_region[:-1]]
        recs = _iid_records(addresses, domains, n)
        iid_chunks.append(b"".join(recs))
        iid_lens[n : n + nb] = np.fromiter(map(len, recs), np.int64, nb)
        if progress is not None:
            for key in range(n, n + nb):
                progress(key)
        n += nb
    if n != count:
        raise ValueError(f"announced {count} records, got {n}")

    lut = np.zeros(count, dtype=schema.LUT0_DTYPE)
    lut["key"] = np.arange(count)
    lut["iid"]["offset"] = np.concatenate([[0], np.cumsum(iid_lens)[:-1]]) if count else []
    lut["iid"]["length"] = iid_lens
    lut["seg"]["offset"] = np.concatenate([[0], np.cumsum(seg_lens)[:-1]]) if count else []
    lut["seg"]["length"] = seg_lens

    meta_bytes = check_meta(meta)
    group_bytes = _groups_v0(groups, count)
    lut_bytes = lut.tobytes()
    sizes = {
        "lut": len(lut_bytes),
        "iids": int(iid_lens.sum()),
        "meta": len(meta_bytes),
        "groups": len(group_bytes),
        "segs": int(seg_lens.sum()),
    }
    header: dict[str, Any] = {"version": 0, "rformat": rformat}
    offset = schema.HEADER0_SIZE
    for name, size in sizes.items():
        header[name] = {"offset": offset, "length": size}
        offset += size
    if offset > schema.MAX_U32 or (count and (iid_lens.sum() > schema.MAX_U32 or seg_lens.sum() > schema.MAX_U32)):
        raise IIDLimitError(f"the file would be {offset} bytes; version 0 offsets are uint32 (< 4 GiB); save as version 1")
    out.write(schema.Header0.build(header))
    out.write(lut_bytes)
    for chunk in iid_chunks:
        out.write(chunk)
    out.write(meta_bytes)
    out.write(group_bytes)
    for chunk in seg_chunks:
        out.write(chunk)
    return offset


def _align(n: int, to: int = 8) -> int:
    return (n + to - 1) // to * to


def _block_crcs(sections: Mapping[int, bytes], block: int = schema.BLOCK_SIZE1) -> bytes:
    """The ``block_crcs`` section: CRC32C of each ``block`` bytes of each section."""
    from crc32c import crc32c

    tables = []
    for sid, data in sections.items():
        crcs = np.array([crc32c(data[i : i + block]) for i in range(0, len(data), block)], dtype=schema.BLOCK_CRC1_DTYPE)
        tables.append({"section_id": sid, "reserved": 0, "block_size": block, "count": len(crcs), "crcs": crcs})
    return schema.BlockCrcs1.build({"table_count": len(tables), "tables": tables})


#: Packbits payloads up to this size never try zstd in ``codec="auto"``: a
#: zstd frame costs at least ~10 bytes of framing, so it cannot beat rle or
#: packbits there, and skipping it saves most of the encoding time.
_ZSTD_MIN_PACKED = 48


#: Masks up to this many pixels are written as one region in version 1.
_SPLIT_PIXELS = 1 << 20

#: Whether :func:`write_v1` uses the bulk path (tests turn it off to compare
#: with the segment-by-segment path, which must give the same bytes).
_BULK = True

#: Segments encoded together by the bulk paths of :func:`write_v0` and
#: :func:`write_v1`: at most this many, holding at most
#: :data:`_BULK_PIXELS` bbox pixels (both bound the memory of the packed
#: streams, runs and payloads held at once).
_BULK_BATCH = 1 << 16

#: Bbox pixels of one batch.  A noisy mask has up to one run per pixel, and
#: the encoders hold a few int64 arrays per run of a batch (runs, True runs,
#: components): about 50 bytes per pixel at worst, so 1 GB for 2**24 pixels.
#: Typical segments (hundreds to thousands of pixels, a few runs per row)
#: fill batches of tens of thousands; a single larger segment is a batch of
#: its own.
_BULK_PIXELS = 1 << 24


class _SegmentEncoder:
    """Chooses how a segment's regions are written in version 1."""

    HEAD = schema.RegionHead1.sizeof()

    def __init__(self, codec: Any):
        from .codecs import encoder_for, encoder_many_for, resolve_codec

        self.fixed = resolve_codec(codec)  # None means "auto"
        self.encode = encoder_for(codec)
        # zstd frames cost ~10 bytes of framing: on small masks they cannot beat
        # rle or packbits, so "auto" does not try them there.
        self.encode_small = self.encode if self.fixed is not None else encoder_for("auto", [0, 1])
        self.bulk = encoder_many_for(codec)
        # The packed-stream path (packed_regions) knows the built-in codecs:
        # "auto" over exactly packbits, rle and zstd, or one of them.
        kinds = self.bulk.kinds
        if self.bulk.auto:
            self.fast = "auto" if kinds == ["packbits", "rle", "zstd"] else None
        else:
            self.fast = kinds[0]
        self.zstd = self.bulk.codecs[kinds.index("zstd")] if "zstd" in kinds else None

    def _encode(self, mask: np.ndarray) -> tuple[int, bytes]:
        small = schema.packed_len(*mask.shape) <= _ZSTD_MIN_PACKED
        return (self.encode_small if small else self.encode)(mask)

    def regions(self, seg: Segment) -> list[tuple[tuple[int, int, int, int], int, bytes]]:
        """``(bbox, codec, payload)`` to write for ``seg``.

        A segment built from a mask of at most :data:`_SPLIT_PIXELS` pixels
        is one region over the tight bbox of its set pixels: no component
        labelling at all (:meth:`bulk_regions` does this for many segments
        at once, with the same result).  Otherwise: its 8-connected
        components, or one region over the tight bbox of all of them holding
        the whole mask, whichever is smaller on disk.  Many tiny components
        (noise, scattered dots) cost a 28-byte head each, so one region is
        often smaller; large separated blobs stay split so that queries
        decode only what they touch.  Readers need only the rule that the
        segment mask is the OR of its regions.
        """
        src = seg.source
        if src is not None and src.size <= _SPLIT_PIXELS:
            box = tight_bbox(src, (seg.bbox[0], seg.bbox[1]))
            if box is None:
                return []
            r0, c0 = seg.bbox[0], seg.bbox[1]
            return [(box, *self._encode(src[box[0] - r0 : box[2] - r0, box[1] - c0 : box[3] - c0]))]
        regs = seg.regions
        whole = None
        if len(regs) >= 2:
            box = (min(r.bbox[0] for r in regs), min(r.bbox[1] for r in regs),
                   max(r.bbox[2] for r in regs), max(r.bbox[3] for r in regs))
            cid, payload = self._encode(seg.mask(box))
            whole = (box, cid, payload)
            # Every split region costs a head and at least one payload byte.
            if self.HEAD + len(payload) <= (self.HEAD + 1) * len(regs):
                return [whole]
        split = []
        for r in regs:
            if self.fixed is not None and r.payload is not None and r.codec == self.fixed.id:
                split.append((r.bbox, r.codec, bytes(r.payload)))
            else:
                split.append((r.bbox, *self._encode(r.decode())))
        if whole is not None and self.HEAD + len(whole[2]) < sum(self.HEAD + len(p) for _, _, p in split):
            return [whole]
        return split

    def _encode_packed(self, masks: list[np.ndarray], pm: Any, runs: Any, which: np.ndarray) -> Callable[[], tuple[np.ndarray, list[bytes]]]:
        """Start encoding masks ``which`` of a packed batch (:meth:`regions`'
        choice: small masks never try zstd); the function returned gives the
        codec ids and payloads (:meth:`BulkEncoder.start_packed`)."""
        from .codecs.rle import RunBatch

        if runs is None:
            runs = RunBatch.of(pm)
        if self.fixed is not None:
            return self.bulk.start_packed(masks, pm, runs, which)
        small = (pm.starts[which + 1] - pm.starts[which]) <= _ZSTD_MIN_PACKED
        # encode_small is "auto" over packbits and rle (ids 0, 1): the same as
        # "auto" with every other candidate excluded on small masks.
        exclude = {c.id: small for c in self.bulk.codecs if c.id not in (0, 1)}
        return self.bulk.start_packed(masks, pm, runs, which, exclude=exclude)

    def bulk_regions(self, segs: list[Segment]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """:meth:`regions` of many segments built by :meth:`IIDFile.add` (whose ``source`` is a C-contiguous bool mask shaped like the bbox) of at most :data:`_SPLIT_PIXELS` pixels at once.

        Returns ``boxes`` ((n, 4) int64, absolute tight bboxes), ``ids``
        (codec of each, -1 for a segment without set pixels, which has no
        region) and the payloads (``b""`` for those).  Every step works on
        all masks together: one packed stream, one run computation (which
        also gives the tight bboxes), the crops of masks whose tight bbox is
        smaller packed and run once more, then the codec choice in bulk.
        """
        from .codecs.packbits import pack_masks
        from .codecs.rle import RunBatch

        n = len(segs)
        masks = [s.source for s in segs]
        origin = np.fromiter(itertools.chain.from_iterable([s.bbox for s in segs]), np.int64, 4 * n).reshape(n, 4)
        shapes = origin[:, 2:] - origin[:, :2]
        pm = pack_masks(masks, shapes)
        runs = RunBatch.of(pm)
        tight = tight_bboxes_of_runs(runs.runs, runs.offsets, pm.widths)
        nonempty = tight[:, 0] >= 0
        whole = nonempty & (tight[:, 0] == 0) & (tight[:, 1] == 0) & (tight[:, 2] == shapes[:, 0]) & (tight[:, 3] == shapes[:, 1])
        ids = np.full(n, -1, dtype=np.int64)
        whole_idx = np.flatnonzero(whole)
        # zstd compresses the whole masks in the background while the crops
        # are made, packed and measured here.
        finish_whole = self._encode_packed(masks, pm, runs, whole_idx)
        cut = np.flatnonzero(nonempty & ~whole)
        finish_cut = None
        if cut.size:
            crops = [
                np.ascontiguousarray(masks[i][r0:r1, c0:c1])
                for i, (r0, c0, r1, c1) in zip(cut.tolist(), tight[cut].tolist())
            ]
            pm2 = pack_masks(crops, tight[cut, 2:] - tight[cut, :2])
            finish_cut = self._encode_packed(crops, pm2, None, np.arange(cut.size, dtype=np.int64))
        got, payloads = finish_whole()
        ids[whole_idx] = got
        if finish_cut is not None:
            got2, payloads2 = finish_cut()
            ids[cut] = got2
            payloads += payloads2
        # Payloads in segment order: whole masks, then crops, then the empty.
        empty = np.flatnonzero(~nonempty)
        payloads += [b""] * empty.size
        rank = np.empty(n, dtype=np.int64)
        rank[np.concatenate((whole_idx, cut, empty))] = np.arange(n)
        out = [payloads[r] for r in rank.tolist()]
        boxes = tight + origin[:, [0, 1, 0, 1]]
        return boxes, ids, out

    def packed_regions(self, packed: "_Packed") -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """:meth:`bulk_regions` from the packed stream of the masks (when
        :attr:`fast`): same boxes, codec ids and payloads.

        :func:`~iidschema.crops.crop_runs` gives every mask's tight bbox and
        the runs of its crop, so nothing is cropped or packed again: the
        ``rle`` sizes and payloads come from those runs, packbits payloads
        are slices of the stream (whole masks) or rebuilt from the runs
        (cropped ones), and zstd compresses only masks where it can still
        win.  The masks go in steps of :data:`_STEP`: zstd compresses a
        step's masks on a background thread while this one crops the next
        step (on two cores that beats two halves on two threads, which
        then compete with zstd).
        """
        from .crops import packed_slice

        pm = packed.pm
        n = len(pm)
        steps = [self._step(packed_slice(pm, a, min(a + _STEP, n))) for a in range(0, n, _STEP)]
        done = [finish() for finish in steps]
        if not done:
            return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64), []
        tight = np.concatenate([t for t, _, _ in done])
        ids = np.concatenate([i for _, i, _ in done])
        payloads = [p for _, _, part in done for p in part]
        return tight + packed.origin[:, [0, 1, 0, 1]], ids, payloads

    def _step(self, pm: Any) -> Callable[[], tuple[np.ndarray, np.ndarray, list[bytes]]]:
        """One step of :meth:`packed_regions`: everything up to zstd, which
        runs in the background; the function returned waits for it and
        gives the relative tight bboxes, codec ids and payloads."""
        from .codecs import _BACKGROUND_MIN, _executor
        from .codecs.zstd import MIN_FRAME_BYTES
        from .crops import crop_runs

        n = len(pm)
        cr = crop_runs(pm)
        tight = cr.tight
        nonempty = tight[:, 0] >= 0
        whole = nonempty & (tight[:, 0] == 0) & (tight[:, 1] == 0) & (tight[:, 2] == pm.heights) & (tight[:, 3] == pm.widths)
        sizes = tight[:, 2:] - tight[:, :2]
        packed_size = (sizes[:, 0] * sizes[:, 1] + 7) >> 3
        ids = np.full(n, -1, dtype=np.int64)
        out = np.empty(n, dtype=object)
        out[~nonempty] = b""
        live = np.flatnonzero(nonempty)
        if self.fast == "rle":
            ids[live] = 1
            out[live] = _objects(cr.rle_payloads(live))
            return lambda: (tight, ids, out.tolist())

        # Packbits payloads: whole masks are slices of the stream, the
        # crops are rebuilt once for every mask that may need them.
        if self.fast == "auto":
            rle_size = cr.rle_sizes()
            best = np.minimum(packed_size, rle_size)
            choice = (rle_size < packed_size).astype(np.int64)  # ties: the lower id
            # zstd where it may still be strictly smaller (never on small
            # masks, as regions() does; never below MIN_FRAME_BYTES).
            tried = np.flatnonzero(nonempty & (packed_size > _ZSTD_MIN_PACKED) & (best > MIN_FRAME_BYTES))
            need = nonempty & (choice == 0)
            need[tried] = True
        else:
            tried = live if self.fast == "zstd" else np.zeros(0, dtype=np.int64)
            need = nonempty
        cut = np.flatnonzero(need & ~whole)
        crops = cr.packed(cut)
        at_cut = np.full(n, -1, dtype=np.int64)
        at_cut[cut] = np.arange(cut.size)

        def packbits(which: np.ndarray) -> np.ndarray:
            got = np.empty(which.size, dtype=object)
            w = whole[which]
            if w.any():
                got[w] = _objects(pm.payloads(which[w]))
            if not w.all():
                got[~w] = _objects(crops.payloads(at_cut[which[~w]]))
            return got

        if self.fast == "packbits":
            ids[live] = 0
            out[live] = packbits(live)
            return lambda: (tight, ids, out.tolist())
        # zstd reads the payloads in place: whole masks first, then crops.
        w = whole[tried]
        order = np.concatenate((tried[w], tried[~w]))
        spans = [(pm.packed, pm.starts[order[: int(w.sum())]], packed_size[order[: int(w.sum())]]),
                 (crops.packed, crops.starts[at_cut[order[int(w.sum()) :]]], packed_size[order[int(w.sum()) :]])]
        if order.size >= _BACKGROUND_MIN:
            # One thread: this one keeps the other core busy cropping.
            pending = _executor().submit(self.zstd.compress_spans, spans, 0)
            frames_of = pending.result
        else:
            frames = self.zstd.compress_spans(spans)
            frames_of = lambda: frames  # noqa: E731
        if self.fast == "zstd":
            def finish_zstd() -> tuple[np.ndarray, np.ndarray, list[bytes]]:
                ids[order] = 2
                out[order] = _objects(list(map(bytes, frames_of())))
                return tight, ids, out.tolist()

            return finish_zstd

        # auto: the rle bytes are made while zstd runs.
        rle = np.flatnonzero((choice == 1) & nonempty)
        rle_payloads = _objects(cr.rle_payloads(rle))

        def finish_auto() -> tuple[np.ndarray, np.ndarray, list[bytes]]:
            frames = frames_of()
            frame_size = np.fromiter(map(len, frames), dtype=np.int64, count=order.size)
            wins = np.flatnonzero(frame_size < best[order])
            won = order[wins]
            choice[won] = 2
            ids[live] = choice[live]
            out[won] = _objects([bytes(frames[i]) for i in wins.tolist()])
            pb = np.flatnonzero(nonempty & (choice == 0))
            out[pb] = packbits(pb)
            still = choice[rle] == 1  # (the others zstd won)
            out[rle[still]] = rle_payloads[still]
            return tight, ids, out.tolist()

        return finish_auto


#: Masks per step of :meth:`_SegmentEncoder.packed_regions`.
_STEP = 4096


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array of ``items`` (bytes stay bytes, whatever their lengths)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


class _Packed:
    """Masks to encode in bulk: their packed stream and the top-left
    corner (row, column) of each one's bbox; slices are views."""

    __slots__ = ("pm", "origin")

    def __init__(self, pm: Any, origin: np.ndarray):
        self.pm = pm
        self.origin = origin

    def __len__(self) -> int:
        return len(self.pm)

    def __getitem__(self, part: slice) -> "_Packed":
        from .crops import packed_slice

        a, b, _ = part.indices(len(self))
        return _Packed(packed_slice(self.pm, a, max(a, b)), self.origin[a:b])


#: Bulk segments below this many are encoded in the calling thread only.
_PARALLEL_MIN = 4096
_POOL: Any = None
_POOL_PID = 0


def _worker() -> Any:
    """The writers' worker thread (one; created on first use, and again in
    a forked child, which does not inherit the thread)."""
    global _POOL, _POOL_PID
    if _POOL is None or _POOL_PID != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iidschema-encode")
        _POOL_PID = os.getpid()
    return _POOL


def _halves(fn: Callable[[Any], Any], segs: Any) -> tuple[Any, Any] | None:
    """``fn`` of each half of ``segs`` (a list, or anything with a length
    and slices), the second half on a worker thread, or None (the caller
    then calls ``fn(segs)``) with fewer than :data:`_PARALLEL_MIN` segments
    or one CPU.  The bulk encoders spend most of their time in numpy,
    scipy.ndimage and zstd calls on large arrays, which release the GIL: two
    halves run in about 0.6-0.8 of the time."""
    if len(segs) < _PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        return None
    half = len(segs) // 2
    second = _worker().submit(fn, segs[half:])
    first = fn(segs[:half])
    return first, second.result()


def _bulk_regions_parallel(encoder: _SegmentEncoder, segs: list[Segment]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """:meth:`_SegmentEncoder.bulk_regions` of ``segs``, in two halves when
    worth it (:func:`_halves`); the halves are independent and joined in
    order, so the result is the same.  With a built-in codec (or "auto")
    the masks are packed once and encoded from the stream
    (:meth:`_SegmentEncoder.packed_regions`, which has its own thread)."""
    if encoder.fast is not None:
        from .codecs.packbits import pack_masks

        n = len(segs)
        origin = np.fromiter(itertools.chain.from_iterable([s.bbox for s in segs]), np.int64, 4 * n).reshape(n, 4)
        pm = pack_masks([s.source for s in segs], origin[:, 2:] - origin[:, :2])
        return encoder.packed_regions(_Packed(pm, origin[:, :2]))
    both = _halves(encoder.bulk_regions, segs)
    if both is None:
        return encoder.bulk_regions(segs)
    (boxes, ids, payloads), (boxes2, ids2, payloads2) = both
    return np.concatenate((boxes, boxes2)), np.concatenate((ids, ids2)), payloads + payloads2


#: One segment record holding exactly one region: the two heads back to back
#: (their layouts come from the declarations in :mod:`iidschema.schema`).
_SEG_ONE_REGION = np.dtype([("seg", schema.dtype_of(schema.SegmentHead1)), ("region", schema.dtype_of(schema.RegionHead1))])
_IID_HEAD_DTYPE = schema.dtype_of(schema.IIDHead0)
_SEG_HEAD0_DTYPE = schema.dtype_of(schema.SegmentHead0)
_REGION_HEAD0_DTYPE = schema.dtype_of(schema.RegionHead0)


def _iid_records(addresses: list[bytes], domains: list[bytes], first_key: int) -> list[bytes]:
    """The IID records of keys ``first_key..``: heads built in one numpy array."""
    n = len(addresses)
    heads = np.empty(n, dtype=_IID_HEAD_DTYPE)
    heads["key"] = np.arange(first_key, first_key + n)
    heads["domain_len"] = np.fromiter(map(len, domains), dtype=np.int64, count=n)
    heads["address_len"] = np.fromiter(map(len, addresses), dtype=np.int64, count=n)
    # One bytes object per head (a void view), then two concatenations per
    # record, all in C.
    head_bytes = heads.view(f"V{_IID_HEAD_DTYPE.itemsize}").tolist()
    return list(map(operator.add, map(operator.add, head_bytes, domains), addresses))


def _bulk_seg_records(keys: np.ndarray, boxes: np.ndarray, ids: np.ndarray, payloads: list[bytes]) -> list[bytes]:
    """Segment records of bulk-encoded segments (one region, or none when
    ``ids`` is -1), heads built in one numpy array."""
    n = keys.size
    heads = np.zeros(n, dtype=_SEG_ONE_REGION)
    has = ids >= 0
    heads["seg"]["key"] = keys
    heads["seg"]["region_count"] = has
    bbox = heads["region"]["bbox"]
    for i, name in enumerate(("minr", "minc", "maxr", "maxc")):
        bbox[name] = np.where(has, boxes[:, i], 0)
    heads["region"]["codec"] = np.where(has, ids, 0)
    heads["region"]["length"] = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
    records = list(map(operator.add, heads.view(f"V{_SEG_ONE_REGION.itemsize}").tolist(), payloads))
    short = schema.dtype_of(schema.SegmentHead1).itemsize
    for i in np.flatnonzero(~has).tolist():
        records[i] = records[i][:short]
    return records


def _batches(records: Iterable[Record | AddedColumns]) -> Iterator[list[Record] | AddedColumns]:
    """``records`` in batches of at most :data:`_BULK_BATCH` segments and
    :data:`_BULK_PIXELS` bbox pixels (a larger segment alone): runs of
    ``(IID, Segment)`` pairs as lists, entries added by
    :meth:`IIDFile.add_many` as slices of their columns."""
    for is_cols, run in itertools.groupby(records, key=lambda r: type(r) is AddedColumns):
        if is_cols:
            for cols in run:
                cuts = _cuts(cols.packed.pixels)
                if len(cuts) == 2:
                    yield cols
                else:
                    for lo, hi in zip(cuts, cuts[1:]):
                        yield cols[lo:hi]
        else:
            while True:
                batch = list(itertools.islice(run, _BULK_BATCH))
                if not batch:
                    break
                boxes = np.fromiter(itertools.chain.from_iterable([seg.bbox for _, seg in batch]), np.int64, 4 * len(batch))
                boxes = boxes.reshape(-1, 4)
                cuts = _cuts((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
                for lo, hi in zip(cuts, cuts[1:]):
                    yield batch if hi - lo == len(batch) else batch[lo:hi]


def _cuts(pixels: np.ndarray) -> list[int]:
    """Batch bounds ``0 = c0 < c1 < ... = n`` for segments of ``pixels``
    bbox pixels each, as :func:`_batches` cuts a run of them."""
    n = pixels.size
    cuts = [0]
    total = exclusive_cumsum(pixels)
    while cuts[-1] < n:
        lo = cuts[-1]
        # The last segment that still fits the pixel budget (at least one).
        hi = int(np.searchsorted(total, total[lo] + _BULK_PIXELS, side="right")) - 1
        cuts.append(min(max(hi, lo + 1), lo + _BULK_BATCH, n))
    return cuts


def _digest(*record_lists: list[bytes]) -> list[tuple[np.ndarray, np.ndarray, bytes]]:
    """For each list of records: their lengths, their CRC32Cs and their
    bytes joined."""
    from crc32c import crc32c

    return [
        (np.fromiter(map(len, recs), dtype=np.uint64, count=len(recs)),
         np.fromiter(map(crc32c, recs), dtype=np.uint32, count=len(recs)),
         b"".join(recs))
        for recs in record_lists
    ]


def _boxes_and_addresses(records: list[Record | AddedColumns]) -> tuple[np.ndarray, list[bytes]]:
    """Every record's bbox ((n, 4) int64) and address, in order."""
    boxes: list[np.ndarray] = []
    addresses: list[bytes] = []
    for is_cols, run in itertools.groupby(records, key=lambda r: type(r) is AddedColumns):
        if is_cols:
            for cols in run:
                boxes.append(cols.bboxes)
                addresses += cols.addresses
        else:
            pairs = list(run)
            boxes.append(np.fromiter(itertools.chain.from_iterable([seg.bbox for _, seg in pairs]), np.int64, 4 * len(pairs)).reshape(-1, 4))
            addresses += [iid.address for iid, _ in pairs]
    return (np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.int64)), addresses


def _v1_segments(encoder: _SegmentEncoder, segs: list[Segment], first_key: int, used: set[int]) -> list[bytes]:
    """Segment records of keys ``first_key..`` (one batch)."""
    srecs: list[bytes | None] = [None] * len(segs)
    bulk = [j for j, seg in enumerate(segs) if seg.source is not None and seg.source.size <= _SPLIT_PIXELS] if _BULK else []
    if bulk:
        bboxes, ids, payloads = _bulk_regions_parallel(encoder, [segs[j] for j in bulk])
        sel = np.asarray(bulk, dtype=np.int64)
        used.update(np.unique(ids[ids >= 0]).tolist())
        for j, rec in zip(bulk, _bulk_seg_records(sel + first_key, bboxes, ids, payloads)):
            srecs[j] = rec
    for j, seg in enumerate(segs):
        if srecs[j] is None:
            srecs[j] = _v1_record(encoder, seg, first_key + j, used)
    return srecs  # type: ignore[return-value]


def _v1_record(encoder: _SegmentEncoder, seg: Segment, key: int, used: set[int]) -> bytes:
    regions = encoder.regions(seg)
    parts = [schema.SEG_HEAD1.pack(key, len(regions))]
    for bbox, cid, payload in regions:
        used.add(cid)
        parts.append(schema.REGION_HEAD1.pack(*bbox, cid, 0, len(payload)))
        parts.append(payload)
    return b"".join(parts)


def _v1_columns(encoder: _SegmentEncoder, cols: AddedColumns, first_key: int, used: set[int]) -> list[bytes]:
    """:func:`_v1_segments` of entries added by :meth:`IIDFile.add_many`:
    encoded straight from their packed stream."""
    if not _BULK or encoder.fast is None:
        return _v1_segments(encoder, cols.segments(), first_key, used)
    n = len(cols)
    pm = cols.packed
    small = pm.pixels <= _SPLIT_PIXELS
    if small.all():
        sel = np.arange(n, dtype=np.int64)
        packed = _Packed(pm, cols.bboxes[:, :2])
    else:
        from .crops import packed_take

        sel = np.flatnonzero(small)
        packed = _Packed(packed_take(pm, sel), cols.bboxes[sel, :2])
    bboxes, ids, payloads = encoder.packed_regions(packed)
    used.update(np.unique(ids[ids >= 0]).tolist())
    records = _bulk_seg_records(sel + first_key, bboxes, ids, payloads)
    if sel.size == n:
        return records
    srecs: list[bytes | None] = [None] * n
    for j, rec in zip(sel.tolist(), records):
        srecs[j] = rec
    for j in np.flatnonzero(~small).tolist():
        srecs[j] = _v1_record(encoder, cols.segment(j), first_key + j, used)
    return srecs  # type: ignore[return-value]


def write_v1(
    out: BinaryIO,
    records: Iterable[Record],
    count: int,
    groups: Mapping[str, Iterable[int]],
    meta: Any,
    *,
    codec: Any = "auto",
    rformat: int = 0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write a version-1 file and return its size.

    ``codec`` is a codec id, name or object used for every region, or
    ``"auto"`` to keep, per region, the smallest encoding among the built-in
    codecs.  Each segment is written as its components or as one region,
    whichever is smaller (:class:`_SegmentEncoder`).  Sections are written meta, groups, codecs, lut, spatial and
    address indexes, iids, segs: everything a lazy reader needs first sits
    near the header, so remote readers find it with one or two range requests.

    Segments added with :meth:`IIDFile.add` (the common case when building a
    file) are encoded in bulk, :data:`_BULK_BATCH` at a time
    (:meth:`_SegmentEncoder.bulk_regions`); the others (read from a file,
    or huge) one by one.  Both give the same bytes.
    """
    from crc32c import crc32c

    from .index.address import build_address_index
    from .index.spatial import build_spatial_index

    if count > schema.MAX_U32:
        raise IIDLimitError(f"version 1 holds at most {schema.MAX_U32} entries, got {count}")
    encoder = _SegmentEncoder(codec)
    digests: list[Any] = []  # per batch: lengths, CRCs and joined bytes of its records
    area_parts: list[np.ndarray] = []
    box_parts: list[np.ndarray] = []
    addresses: list[bytes] = []
    used: set[int] = set()
    # With a second CPU, the worker thread takes what does not need the
    # encoded segments: the indexes, when the records come as a list (a
    # file built in memory: every bbox and address is known before
    # encoding), and each batch's record CRCs and join while the next batch
    # is encoded.
    threaded = count >= _PARALLEL_MIN and (os.cpu_count() or 1) > 1
    indexes = None
    if threaded and isinstance(records, list):
        early_boxes, early_addresses = _boxes_and_addresses(records)
        indexes = _worker().submit(lambda: (build_spatial_index(early_boxes), build_address_index(early_addresses)))
    done = 0
    for batch in _batches(records):
        nb = len(batch)
        if done + nb > count:
            raise ValueError("more records than announced")
        if type(batch) is AddedColumns:
            iid_recs = _iid_records(batch.addresses, batch.domains, done)
            seg_recs = _v1_columns(encoder, batch, done, used)
            area_parts.append(batch.areas)
            box_parts.append(batch.bboxes)
            addresses += batch.addresses
        else:
            iids = [iid for iid, _ in batch]
            segs = [seg for _, seg in batch]
            batch_addresses = [iid.address for iid in iids]
            iid_recs = _iid_records(batch_addresses, [iid.domain for iid in iids], done)
            seg_recs = _v1_segments(encoder, segs, done, used)
            area_parts.append(np.fromiter([seg.area for seg in segs], np.int64, nb))
            box_parts.append(np.fromiter(itertools.chain.from_iterable([seg.bbox for seg in segs]), np.int64, 4 * nb).reshape(nb, 4))
            addresses += batch_addresses
        digests.append(_worker().submit(_digest, iid_recs, seg_recs) if threaded else _digest(iid_recs, seg_recs))
        del iid_recs, seg_recs
        if progress is not None:
            for key in range(done, done + nb):
                progress(key)
        done += nb
    if done != count:
        raise ValueError(f"announced {count} records, got {done}")

    lut = np.zeros(count, dtype=schema.LUT1_DTYPE)
    bbox_arr = np.concatenate(box_parts) if box_parts else np.zeros((0, 4), dtype=np.int64)
    parts = [d.result() if threaded else d for d in digests]
    for k, name in enumerate(("iid", "seg")):
        lens = np.concatenate([p[k][0] for p in parts]) if parts else np.zeros(0, dtype=np.uint64)
        lut[name]["length"] = lens
        if count:
            lut[name]["offset"][1:] = np.cumsum(lens)[:-1]
        lut[f"{name}_crc"] = np.concatenate([p[k][1] for p in parts]) if parts else np.zeros(0, dtype=np.uint32)
    iid_chunks = [p[0][2] for p in parts]
    seg_chunks = [p[1][2] for p in parts]
    del parts, digests
    lut["area"] = np.concatenate(area_parts) if area_parts else np.zeros(0, dtype=np.int64)
    for i, field in enumerate(("minr", "minc", "maxr", "maxc")):
        lut["bbox"][field] = bbox_arr[:, i]
    rows = lut.tobytes()
    step = schema.LUT_BLOCK * schema.LUT1_DTYPE.itemsize
    block_crcs = np.array([crc32c(rows[i : i + step]) for i in range(0, len(rows), step)], dtype=schema.BLOCK_CRC1_DTYPE)

    if indexes is not None:
        spatial, address = indexes.result()
    else:
        spatial = build_spatial_index(bbox_arr)
        address = build_address_index(addresses)
    sections: list[tuple[int, list[bytes]]] = [
        (schema.SectionId.META, [check_meta(meta)]),
        (schema.SectionId.GROUPS, [group_bytes := _groups_v0(groups, count)]),
        (schema.SectionId.CODECS, [schema.Codecs1.build({"count": len(used), "ids": sorted(used)})]),
        (schema.SectionId.BLOCK_CRCS, [_block_crcs({schema.SectionId.GROUPS: group_bytes, schema.SectionId.SPATIAL_INDEX: spatial,
                                                    schema.SectionId.ADDRESS_INDEX: address})]),
        (schema.SectionId.LUT, [rows, block_crcs.tobytes()]),
        (schema.SectionId.SPATIAL_INDEX, [spatial]),
        (schema.SectionId.ADDRESS_INDEX, [address]),
        # One bytes object per batch: one CRC call and one write each.
        (schema.SectionId.IIDS, iid_chunks),
        (schema.SectionId.SEGS, seg_chunks),
    ]
    del iid_chunks, seg_chunks
    return write_sectioned(out, 1, rformat, count, sections)


def _chunks_crc(sid: int, chunks: list[bytes]) -> int:
    from crc32c import crc32c

    crc = 0
    for c in chunks:
        crc = crc32c(c, crc)
    return crc


def write_sectioned(out: BinaryIO, version: int, rformat: int, count: int, sections: list[tuple[int, list[bytes]]],
                    crc_of: Callable[[int, list[bytes]], int] = _chunks_crc) -> int:
    """Write a version-1 layout header (versions 1 and 2) and ``sections``
    (id, byte strings to write in order), each at an offset that is a
    multiple of 8, in the given order; return the file size.  ``crc_of(id,
    chunks)`` gives a section's CRC for the section table (default: CRC32C
    of its bytes)."""
    from crc32c import crc32c

    table = []
    offset = _align(schema.header1_size(len(sections)))
    for sid, chunks in sections:
        length = sum(len(c) for c in chunks)
        table.append({"id": sid, "flags": 0, "crc": crc_of(sid, chunks), "offset": offset, "length": length})
        offset = _align(offset + length)
    header = {
        "version": version,
        "rformat": rformat,
        "magic": schema.MAGIC1,
        "entry_count": count,
        "flags": 0,
        "section_count": len(table),
        "sections": table,
        "header_crc": 0,
    }
    head = schema.HEADERS[version].build(header)
    header["header_crc"] = crc32c(head[:-4])
    head = schema.HEADERS[version].build(header)
    out.write(head)
    pos = len(head)
    for entry, (_, chunks) in zip(table, sections):
        out.write(b"\0" * (entry["offset"] - pos))
        for c in chunks:
            out.write(c)
        pos = entry["offset"] + entry["length"]
    return pos


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Any:
    """Call ``write(fh)`` on a temporary file beside ``path``, then replace
    ``path`` with it atomically.

    Afterwards ``path`` is either the complete old file or the complete new
    one: the data is flushed and fsynced before ``os.replace``, and on any
    error the temporary file is removed and ``path`` is untouched (the
    reference truncated the target first and left a 0-byte file on errors).
    """
    # Write through symlinks: replace the file a link points to, not the link.
    path = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return result
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)
    return result
