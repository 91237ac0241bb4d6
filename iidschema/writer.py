"""Serialising entries, and replacing files atomically.

The header, metadata and groups are built by their construct declarations;
the per-entry records (millions of them) by ``struct`` packers and numpy
dtypes *derived* from the same declarations in :mod:`iidschema.schema`, so
there is no second copy of the layout here.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

import numpy as np

from . import schema
from .errors import IIDLimitError
from .masks import single_component_of_runs, split_regions, split_regions_many, tight_bbox, tight_bboxes_of_runs
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
        arr = np.unique(np.asarray(list(keys) if not isinstance(keys, np.ndarray) else keys, dtype=np.int64))
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


def _components_v0_many(segs: list[Segment]) -> list[list[tuple[tuple[int, int, int, int], bytes]]]:
    """:func:`_components_v0` of many segments built by :meth:`IIDFile.add`.

    All masks are packed and their runs found at once; a mask that certainly
    is one 8-connected component (:func:`single_component_of_runs`: convex
    blobs, lines) is its own only region, the mask cropped to its tight bbox;
    the others are labelled together (:func:`split_regions_many`).  The
    payloads are packed in bulk.  Same regions, bboxes and bytes as
    :func:`split_regions` region by region.
    """
    from .codecs.packbits import pack_masks  # not at import: listing codecs imports none
    from .codecs.rle import runs_of_packed

    n = len(segs)
    masks = [s.source for s in segs]
    origin = np.fromiter(itertools.chain.from_iterable([s.bbox for s in segs]), np.int64, 4 * n).reshape(n, 4)
    shapes = origin[:, 2:] - origin[:, :2]
    pm = pack_masks(masks, shapes)
    runs, offsets = runs_of_packed(pm)
    tight = tight_bboxes_of_runs(runs, offsets, pm.widths)
    single = single_component_of_runs(runs, offsets, pm.widths)
    out: list[list[tuple[tuple[int, int, int, int], bytes]]] = [[] for _ in range(n)]
    one = np.flatnonzero(single)
    whole = one[(tight[one, 0] == 0) & (tight[one, 1] == 0) & (tight[one, 2] == shapes[one, 0]) & (tight[one, 3] == shapes[one, 1])]
    cut = np.setdiff1d(one, whole, assume_unique=True)
    boxes = (tight + origin[:, [0, 1, 0, 1]]).tolist()
    for i, payload in zip(whole.tolist(), pm.payloads(whole)):
        out[i] = [(tuple(boxes[i]), payload)]
    if cut.size:
        crops = [np.ascontiguousarray(masks[i][r0:r1, c0:c1]) for i, (r0, c0, r1, c1) in zip(cut.tolist(), tight[cut].tolist())]
        for i, payload in zip(cut.tolist(), pack_masks(crops, tight[cut, 2:] - tight[cut, :2]).payloads()):
            out[i] = [(tuple(boxes[i]), payload)]
    rest = np.flatnonzero(~single & (tight[:, 0] >= 0)).tolist()
    if rest:
        parts_of = split_regions_many([masks[i] for i in rest], [(int(origin[i, 0]), int(origin[i, 1])) for i in rest])
        flat = [m for parts in parts_of for _, m in parts]
        payloads = iter(pack_masks(flat).payloads() if flat else [])
        for i, parts in zip(rest, parts_of):
            out[i] = [(bbox, next(payloads)) for bbox, _ in parts]
    return out


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
    records = iter(records)
    seg_size, reg_size = _SEG_HEAD0_DTYPE.itemsize, _REGION_HEAD0_DTYPE.itemsize
    while True:
        batch = list(itertools.islice(records, _BULK_BATCH))
        if not batch:
            break
        nb = len(batch)
        if n + nb > count:
            raise ValueError("more records than announced")
        iids = [iid for iid, _ in batch]
        segs = [seg for _, seg in batch]
        # The limits first, before any encoding: the first entry that does
        # not fit is named, as the one-by-one writer did.
        boxes = np.fromiter(itertools.chain.from_iterable([seg.bbox for seg in segs]), np.int64, 4 * nb).reshape(nb, 4)
        areas = np.fromiter([seg.area for seg in segs], np.int64, nb)
        bad = (boxes > schema.MAX_COORD_V0).any(axis=1) | (boxes < 0).any(axis=1) | (areas > schema.MAX_U32)
        if bad.any():
            j = int(np.argmax(bad))
            key, seg = n + j, segs[j]
            if max(seg.bbox) > schema.MAX_COORD_V0 or min(seg.bbox) < 0:
                raise IIDLimitError(
                    f"entry {key}: bbox {seg.bbox} does not fit version 0 (coordinates 0..{schema.MAX_COORD_V0}); save as version 1"
                )
            raise IIDLimitError(f"entry {key}: area {seg.area} does not fit version 0 (uint32)")
        # Segments added with IIDFile.add (a source mask): their components
        # are labelled together (split_regions_many) and packed together;
        # the others (read from a file) region by region.
        split = [j for j, seg in enumerate(segs) if seg.source is not None and seg.components] if _BULK else []
        regions_of: list[list[tuple[tuple[int, int, int, int], bytes]] | None] = [None] * nb
        if split:
            for j, regions in zip(split, _components_v0_parallel([segs[j] for j in split])):
                regions_of[j] = regions
        for j, seg in enumerate(segs):
            if regions_of[j] is None:
                regions_of[j] = list(_components_v0(seg))
        # Record heads for the whole batch in numpy, then one join.
        counts = np.fromiter(map(len, regions_of), np.int64, nb)  # type: ignore[arg-type]
        regions = [r for rs in regions_of for r in rs]  # type: ignore[union-attr]
        nr = len(regions)
        rboxes = np.fromiter(itertools.chain.from_iterable([b for b, _ in regions]), np.int64, 4 * nr).reshape(nr, 4)
        plens = np.fromiter([len(p) for _, p in regions], np.int64, nr)
        if nr and (rboxes.max() > schema.MAX_COORD_V0 or rboxes.min() < 0 or plens.max() + reg_size > schema.MAX_U32):
            raise IIDLimitError("a region does not fit version 0 (uint16 coordinates, uint32 length); save as version 1")
        heads = np.zeros(nb, dtype=_SEG_HEAD0_DTYPE)
        heads["key"] = np.arange(n, n + nb)
        rheads = np.zeros(nr, dtype=_REGION_HEAD0_DTYPE)
        rheads["len"] = plens + reg_size
        for i, name in enumerate(("minr", "minc", "maxr", "maxc")):
            heads["bbox"][name] = boxes[:, i]
            rheads["bbox"][name] = rboxes[:, i]
        heads["area"] = areas
        hdata, rdata = heads.tobytes(), rheads.tobytes()
        pieces: list[bytes] = []
        r = 0
        for j, c in enumerate(counts.tolist()):
            pieces.append(hdata[j * seg_size : (j + 1) * seg_size])
            for _, payload in regions[r : r + c]:
                pieces.append(rdata[r * reg_size : (r + 1) * reg_size])
                pieces.append(payload)
                r += 1
        seg_chunks.append(b"".join(pieces))
        per_region = np.zeros(nr + 1, dtype=np.int64)
        np.cumsum(plens + reg_size, out=per_region[1:])
        ends = np.zeros(nb + 1, dtype=np.int64)
        np.cumsum(counts, out=ends[1:])
        seg_lens[n : n + nb] = seg_size + per_region[ends[1:]] - per_region[ends[:-1]]
        recs = _iid_records(iids, n)
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

#: Segments encoded together by the bulk path of :func:`write_v1` (bounds
#: the memory of the packed streams, runs and payloads held at once).
_BULK_BATCH = 1 << 16


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


#: Bulk segments below this many are encoded in the calling thread only.
_PARALLEL_MIN = 4096
_POOL: Any = None
_POOL_PID = 0


def _halves(fn: Callable[[list[Segment]], Any], segs: list[Segment]) -> tuple[Any, Any] | None:
    """``fn`` of each half of ``segs``, the second half on a worker thread,
    or None (the caller then calls ``fn(segs)``) with fewer than
    :data:`_PARALLEL_MIN` segments or one CPU.  The bulk encoders spend most
    of their time in numpy, scipy.ndimage and zstd calls on large arrays,
    which release the GIL: two halves run in about 0.6-0.8 of the time."""
    global _POOL, _POOL_PID
    if len(segs) < _PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        return None
    if _POOL is None or _POOL_PID != os.getpid():  # a forked child needs its own thread
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iidschema-encode")
        _POOL_PID = os.getpid()
    half = len(segs) // 2
    second = _POOL.submit(fn, segs[half:])
    first = fn(segs[:half])
    return first, second.result()


def _bulk_regions_parallel(encoder: _SegmentEncoder, segs: list[Segment]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """:meth:`_SegmentEncoder.bulk_regions` of ``segs``, in two halves when
    worth it (:func:`_halves`); the halves are independent and joined in
    order, so the result is the same."""
    both = _halves(encoder.bulk_regions, segs)
    if both is None:
        return encoder.bulk_regions(segs)
    (boxes, ids, payloads), (boxes2, ids2, payloads2) = both
    return np.concatenate((boxes, boxes2)), np.concatenate((ids, ids2)), payloads + payloads2


def _components_v0_parallel(segs: list[Segment]) -> list[list[tuple[tuple[int, int, int, int], bytes]]]:
    """:func:`_components_v0_many`, in two halves when worth it."""
    both = _halves(_components_v0_many, segs)
    return _components_v0_many(segs) if both is None else both[0] + both[1]


#: One segment record holding exactly one region: the two heads back to back
#: (their layouts come from the declarations in :mod:`iidschema.schema`).
_SEG_ONE_REGION = np.dtype([("seg", schema.dtype_of(schema.SegmentHead1)), ("region", schema.dtype_of(schema.RegionHead1))])
_IID_HEAD_DTYPE = schema.dtype_of(schema.IIDHead0)
_SEG_HEAD0_DTYPE = schema.dtype_of(schema.SegmentHead0)
_REGION_HEAD0_DTYPE = schema.dtype_of(schema.RegionHead0)


def _iid_records(iids: list[IID], first_key: int) -> list[bytes]:
    """The IID records of keys ``first_key..``: heads built in one numpy array."""
    n = len(iids)
    domains = [i.domain for i in iids]
    addresses = [i.address for i in iids]
    heads = np.empty(n, dtype=_IID_HEAD_DTYPE)
    heads["key"] = np.arange(first_key, first_key + n)
    heads["domain_len"] = np.fromiter(map(len, domains), dtype=np.int64, count=n)
    heads["address_len"] = np.fromiter(map(len, addresses), dtype=np.int64, count=n)
    data = heads.tobytes()
    size = _IID_HEAD_DTYPE.itemsize
    return [data[j : j + size] + d + a for j, d, a in zip(range(0, n * size, size), domains, addresses)]


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
        bbox[name] = boxes[:, i]
    heads["region"]["codec"] = np.where(has, ids, 0)
    heads["region"]["length"] = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
    data = heads.tobytes()
    size = _SEG_ONE_REGION.itemsize
    short = schema.dtype_of(schema.SegmentHead1).itemsize
    records = [data[j : j + size] + p for j, p in zip(range(0, n * size, size), payloads)]
    for i in np.flatnonzero(~has).tolist():
        records[i] = data[i * size : i * size + short]
    return records


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
    seg_head, reg_head = schema.SEG_HEAD1, schema.REGION_HEAD1
    iid_chunks: list[bytes] = []
    seg_chunks: list[bytes] = []
    areas: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    addresses: list[bytes] = []
    used: set[int] = set()
    records = iter(records)
    done = 0
    while True:
        batch = list(itertools.islice(records, _BULK_BATCH))
        if not batch:
            break
        if done + len(batch) > count:
            raise ValueError("more records than announced")
        iids = [iid for iid, _ in batch]
        segs = [seg for _, seg in batch]
        iid_chunks += _iid_records(iids, done)
        srecs: list[bytes | None] = [None] * len(segs)
        bulk = [j for j, seg in enumerate(segs) if seg.source is not None and seg.source.size <= _SPLIT_PIXELS] if _BULK else []
        if bulk:
            bboxes, ids, payloads = _bulk_regions_parallel(encoder, [segs[j] for j in bulk])
            sel = np.asarray(bulk, dtype=np.int64)
            used.update(np.unique(ids[ids >= 0]).tolist())
            for j, rec in zip(bulk, _bulk_seg_records(sel + done, bboxes, ids, payloads)):
                srecs[j] = rec
        for j, seg in enumerate(segs):
            if srecs[j] is None:
                regions = encoder.regions(seg)
                parts = [seg_head.pack(done + j, len(regions))]
                for bbox, cid, payload in regions:
                    used.add(cid)
                    parts.append(reg_head.pack(*bbox, cid, 0, len(payload)))
                    parts.append(payload)
                srecs[j] = b"".join(parts)
        seg_chunks += srecs  # type: ignore[arg-type]
        areas += [seg.area for seg in segs]
        boxes += [seg.bbox for seg in segs]
        addresses += [iid.address for iid in iids]
        if progress is not None:
            for key in range(done, done + len(batch)):
                progress(key)
        done += len(batch)
    if done != count:
        raise ValueError(f"announced {count} records, got {done}")

    lut = np.zeros(count, dtype=schema.LUT1_DTYPE)
    bbox_arr = np.fromiter(itertools.chain.from_iterable(boxes), np.int64, 4 * count).reshape(count, 4)
    for name, chunks in (("iid", iid_chunks), ("seg", seg_chunks)):
        lens = np.fromiter(map(len, chunks), dtype=np.uint64, count=count)
        lut[name]["length"] = lens
        if count:
            lut[name]["offset"][1:] = np.cumsum(lens)[:-1]
    lut["area"] = np.fromiter(areas, dtype=np.uint64, count=count)
    for i, field in enumerate(("minr", "minc", "maxr", "maxc")):
        lut["bbox"][field] = bbox_arr[:, i]
    lut["iid_crc"] = np.fromiter(map(crc32c, iid_chunks), dtype=np.uint32, count=count)
    lut["seg_crc"] = np.fromiter(map(crc32c, seg_chunks), dtype=np.uint32, count=count)
    rows = lut.tobytes()
    step = schema.LUT_BLOCK * schema.LUT1_DTYPE.itemsize
    block_crcs = np.array([crc32c(rows[i : i + step]) for i in range(0, len(rows), step)], dtype=schema.BLOCK_CRC1_DTYPE)

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
        # One bytes object per section: one CRC call and one write each.
        (schema.SectionId.IIDS, [b"".join(iid_chunks)]),
        (schema.SectionId.SEGS, [b"".join(seg_chunks)]),
    ]
    del iid_chunks, seg_chunks
    hsize = schema.header1_size(len(sections))
    table = []
    offset = _align(hsize)
    for sid, chunks in sections:
        length = sum(len(c) for c in chunks)
        crc = 0
        for c in chunks:
            crc = crc32c(c, crc)
        table.append({"id": sid, "flags": 0, "crc": crc, "offset": offset, "length": length})
        offset = _align(offset + length)
    header = {
        "version": 1,
        "rformat": rformat,
        "magic": schema.MAGIC1,
        "entry_count": count,
        "flags": 0,
        "section_count": len(table),
        "sections": table,
        "header_crc": 0,
    }
    head = schema.Header1.build(header)
    header["header_crc"] = crc32c(head[:-4])
    head = schema.Header1.build(header)
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
