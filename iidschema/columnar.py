"""Many masks as columns: :meth:`IIDFile.masks` and :class:`MaskColumns`.

``fetch()`` returns one :class:`~iidschema.model.Entry` per key and a fresh
array per ``mask()`` call: the natural shape for code that looks at entries
one at a time, but at hundreds of thousands of entries the Python objects
alone cost more than decoding every pixel (``docs/PERFORMANCE.md``).  Code
that wants *all* the masks of a selection (a training pipeline, a
rasteriser, a statistics pass) gets them here as columns instead: the keys,
bboxes and areas as numpy arrays, and every mask decoded into a few large
buffers with one numpy call per codec, no object per entry.

The buffers are the decoders' own outputs (one per codec present, plus one
for masks that had to be composed from several regions), so a mask is a
view: ``columns[i]`` is ``buffers[buffer_of[i]][starts[i] : starts[i] +
h * w].reshape(h, w)``.  Masks of one buffer need not be adjacent (a
``packbits`` payload is padded to whole bytes, version 0 region heads sit
between payloads): what lies between them is not part of any mask.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from . import bulk
from . import masks as _masks
from .codecs import get_codec
from .errors import IIDCodecError, IIDLimitError
from .masks import exclusive_cumsum

if TYPE_CHECKING:  # pragma: no cover
    from .adding import AddedColumns
    from .iidfile import IIDFile

__all__ = ["MaskColumns", "read_masks"]

#: Payload bytes decoded per decoder call (see :func:`_decode_disk`).
DECODE_CHUNK = 1 << 18
#: Threads decoding those parts.
DECODE_THREADS = 2
#: Packed bytes per part of version 2's fast path (:func:`_packed_v2`).
V2_PART = 1 << 20


class MaskColumns:
    """The masks of many entries, decoded, in key order (see the module
    docstring for the layout).

    Columns: ``keys`` (int64, sorted), ``bboxes`` (``(n, 4)`` int64:
    minr, minc, maxr, maxc, max exclusive), ``areas`` (int64, set pixels
    as stored), and the pixel buffers ``buffers`` (1-D ``bool``) with
    ``buffer_of`` and ``starts`` locating each mask.  With
    ``masks(iids=True)``, also ``addresses`` and ``domains`` (lists of
    ``bytes``, one per mask; otherwise None).

    ``columns[i]`` (also negative ``i``) and iteration give the masks as
    ``(h, w)`` views into the buffers: writable, shared with this object,
    and alive as long as any view is.  ``columns.mask(key)`` finds a mask by
    its key.
    """

    __slots__ = ("keys", "bboxes", "areas", "buffers", "buffer_of", "starts", "addresses", "domains")

    def __init__(self, keys: np.ndarray, bboxes: np.ndarray, areas: np.ndarray, buffers: list[np.ndarray],
                 buffer_of: np.ndarray, starts: np.ndarray, addresses: list[bytes] | None = None,
                 domains: list[bytes] | None = None):
        self.keys, self.bboxes, self.areas = keys, bboxes, areas
        self.buffers, self.buffer_of, self.starts = buffers, buffer_of, starts
        self.addresses, self.domains = addresses, domains

    def __len__(self) -> int:
        return int(self.keys.size)

    def __repr__(self) -> str:
        return f"<MaskColumns: {len(self)} masks, {self.pixel_count} pixels in {len(self.buffers)} buffers>"

    @property
    def shapes(self) -> np.ndarray:
        """``(n, 2)`` int64: each mask's (height, width)."""
        return np.stack([self.bboxes[:, 2] - self.bboxes[:, 0], self.bboxes[:, 3] - self.bboxes[:, 1]], axis=1)

    @property
    def pixel_count(self) -> int:
        """Pixels of all masks together (what a dense copy would hold)."""
        s = self.shapes
        return int((s[:, 0] * s[:, 1]).sum())

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"MaskColumns index must be an int, got {type(i).__name__}")
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} masks")
        i %= n
        minr, minc, maxr, maxc = self.bboxes[i].tolist()
        h, w = maxr - minr, maxc - minc
        s = int(self.starts[i])
        return self.buffers[int(self.buffer_of[i])][s : s + h * w].reshape(h, w)

    def __iter__(self) -> Iterator[np.ndarray]:
        bufs = self.buffers
        for b, s, (minr, minc, maxr, maxc) in zip(self.buffer_of.tolist(), self.starts.tolist(), self.bboxes.tolist()):
            h, w = maxr - minr, maxc - minc
            yield bufs[b][s : s + h * w].reshape(h, w)

    def index(self, key: int) -> int:
        """The position of ``key`` in :attr:`keys` (``KeyError`` if absent)."""
        i = int(np.searchsorted(self.keys, key))
        if i == self.keys.size or self.keys[i] != key:
            raise KeyError(f"key {key} is not among these masks")
        return i

    def mask(self, key: int) -> np.ndarray:
        """The mask of entry ``key`` (a view, as ``columns[i]``)."""
        return self[self.index(key)]


def read_masks(f: "IIDFile", keys: np.ndarray, max_pixels: int | None = None, iids: bool = False) -> MaskColumns:
    """Decode the masks of ``keys`` (sorted, unique, in range) of ``f``.

    On-disk entries are parsed with the bulk record walk of
    :mod:`iidschema.bulk` (every check of the one-record parser, a bad record
    reported as precisely) and decoded one codec at a time over the whole
    selection (see :func:`_decode_disk` for the few read one by one);
    entries added by ``add_many()`` are unpacked from their packed stream
    in one call per ``add_many()``, and those added by ``add()`` copied in.
    ``max_pixels``
    (default :data:`iidschema.masks.MAX_MASK_PIXELS`) bounds everything
    decoded, checked before anything is allocated: a small file whose
    bboxes claim gigapixels is refused with :class:`IIDLimitError`, never
    decoded.
    """
    limit = _masks.MAX_MASK_PIXELS if max_pixels is None else int(max_pixels)
    keys = np.asarray(keys, dtype=np.int64)
    n = keys.size
    on_disk = keys < f._disk_count if f._reader is not None else np.zeros(n, dtype=np.bool_)
    if n and f._reader is not None and f._reader.version >= 2 and on_disk.all():
        cols = _packed_v2(f._reader, keys, limit)
        if cols is not None:
            if iids:
                cols.addresses, cols.domains = _iids(f, keys, on_disk)
            return cols
    disk_keys = keys[on_disk]
    table = bulk.segment_table(f._reader, disk_keys) if disk_keys.size else None

    bboxes = np.zeros((n, 4), dtype=np.int64)
    areas = np.zeros(n, dtype=np.int64)
    buffer_of = np.zeros(n, dtype=np.int64)
    starts = np.zeros(n, dtype=np.int64)
    # Masks that are not one region in place: composed (or copied) into
    # their own dense buffer, in selection order.
    composed: list[tuple[int, object]] = []  # (index in the selection, its row in ``table`` or a Segment)
    buffers: list[np.ndarray] = []
    places = None

    disk_idx = np.flatnonzero(on_disk)
    if table is not None:
        bboxes[disk_idx], areas[disk_idx] = table.boxes, table.areas
        direct, lazy, places = _decode_disk(table, limit, buffers)
        d = np.flatnonzero(direct)
        buffer_of[disk_idx[d]] = places[0][table.first[d]]
        starts[disk_idx[d]] = places[1][table.first[d]]
        composed.extend(zip(disk_idx[~direct & ~lazy].tolist(), np.flatnonzero(~direct & ~lazy).tolist()))
        one_by_one = disk_idx[lazy]
    else:  # the bulk walk declined: read those records one by one
        one_by_one = disk_idx
    if one_by_one.size:
        for i, seg in zip(one_by_one.tolist(), f._reader.segments(keys[one_by_one])):
            bboxes[i], areas[i] = seg.bbox, seg.area
            composed.append((i, seg))
    added = ~on_disk
    for cols, idx, rows in _added_rows(f, keys, added):
        bboxes[idx], areas[idx] = cols.bboxes[rows], cols.areas[rows]
        _unpack_added(cols, rows, idx, limit, buffers, buffer_of, starts)
        added[idx] = False
    for i in np.flatnonzero(added).tolist():  # entries made by add()
        seg = f._entry(int(keys[i])).seg
        bboxes[i], areas[i] = seg.bbox, seg.area
        composed.append((i, seg))

    if composed:
        composed.sort(key=lambda item: item[0])
        _compose(composed, table, bboxes, limit, buffers, buffer_of, starts, places)
    addresses, domains = _iids(f, keys, on_disk) if iids else (None, None)
    return MaskColumns(keys, bboxes, areas, buffers, buffer_of, starts, addresses, domains)


def _packed_v2(reader: Any, keys: np.ndarray, limit: int) -> MaskColumns | None:
    """Version 2's fast path: when the selection's payloads are packbits,
    back to back in the segs content (every file the writer makes, read in
    key order), they are read in parts (blocks decompressed) and each part
    unpacked with one ``np.unpackbits`` on one of two threads (zstd and
    numpy let go of the GIL): a mask is then a view into its part.  None:
    anything else (other codecs, gaps), which the general path reads.

    For every entry of the file the parts are the segs content cut by
    position, decoded while this thread decodes the LUT (a mask across a
    cut is then copied whole into one more buffer); for a selection, parts
    of whole masks once the LUT rows are known."""
    early = _early_parts(reader, keys, limit)
    try:
        offs, lens, rows = reader._locate_rows(keys, "seg")
        offs = offs - reader._sections["segs"][0]  # offsets in the segs content
        h = rows["height"].astype(np.int64)
        w = rows["width"].astype(np.int64)
        pixels = h * w
        if (rows["codec"] != 0).any() or not np.array_equal(lens, (pixels + 7) // 8):
            return None
        if keys.size > 1 and not np.array_equal(offs[1:], offs[:-1] + lens[:-1]):
            return None
        _check_total(int(pixels.sum()), limit, "these masks")
        ends = offs + lens
        if early is not None and int(offs[0]) == early.lo and int(ends[-1]) == early.hi:
            buffers, buffer_of, starts = early.place(offs, lens)
        else:
            buffers, buffer_of, starts = _whole_mask_parts(reader, offs, ends)
    finally:
        if early is not None:
            early.close()
    from .reader2 import bboxes_of

    return MaskColumns(keys, bboxes_of(rows), rows["area"].astype(np.int64), buffers, buffer_of, starts)


def _unpacked(reader: Any, lo: int, hi: int) -> np.ndarray:
    """Segs content ``[lo, hi)`` read and unpacked (``bool``), on the
    calling (worker) thread alone."""
    data = reader.blocked("segs").read(lo, hi - lo, parallel=False)  # errors at file offsets already
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8)).view(np.bool_)


def _whole_mask_parts(reader: Any, offs: np.ndarray, ends: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Parts of about :data:`V2_PART` bytes of whole masks, unpacked on two threads."""
    n = offs.size
    cuts = np.searchsorted(ends, np.arange(offs[0] + V2_PART, ends[-1], V2_PART), side="left") + 1
    bounds = [0, *np.unique(cuts[cuts < n]).tolist(), n]
    parts = [(int(offs[a]), int(ends[b - 1])) for a, b in zip(bounds[:-1], bounds[1:])]
    if len(parts) > 1 and DECODE_THREADS > 1:
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            buffers = list(pool.map(lambda p: _unpacked(reader, *p), parts))
    else:
        buffers = [_unpacked(reader, *p) for p in parts]
    buffer_of = np.repeat(np.arange(len(parts), dtype=np.int64), np.diff(bounds))
    starts = 8 * (offs - offs[np.asarray(bounds[:-1], dtype=np.int64)][buffer_of])
    return buffers, buffer_of, starts


class _EarlyParts:
    """The whole segs content ``[lo, hi)`` cut every ``step`` bytes, each
    part read and unpacked on a worker thread, started before the LUT is
    decoded."""

    def __init__(self, reader: Any, lo: int, hi: int, step: int):
        self.lo, self.hi, self.step = lo, hi, step
        self.pool = ThreadPoolExecutor(max_workers=DECODE_THREADS)
        self.futures = [self.pool.submit(_unpacked, reader, a, min(a + step, hi)) for a in range(lo, hi, step)]

    def place(self, offs: np.ndarray, lens: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """(buffers, buffer_of, starts) of masks at ``offs`` (bytes) of ``lens``."""
        buffers = [f.result() for f in self.futures]
        rel = offs - self.lo
        buffer_of = rel // self.step
        starts = 8 * (rel - buffer_of * self.step)
        across = np.flatnonzero(rel + lens > (buffer_of + 1) * self.step)
        if across.size:  # masks across a cut: each copied whole into one more buffer
            sizes = 8 * lens[across]
            extra = np.empty(int(sizes.sum()), dtype=np.bool_)
            at = 0
            for i, size in zip(across.tolist(), sizes.tolist()):
                b, s = int(buffer_of[i]), int(starts[i])
                pieces, left = [], size
                while left:
                    piece = buffers[b][s : s + left]
                    pieces.append(piece)
                    left -= piece.size
                    b, s = b + 1, 0
                extra[at : at + size] = np.concatenate(pieces)
                buffer_of[i], starts[i] = len(buffers), at
                at += size
            buffers.append(extra)
        return buffers, buffer_of, starts

    def close(self) -> None:
        for f in self.futures:
            f.cancel()
        self.pool.shutdown(wait=True)


def _early_parts(reader: Any, keys: np.ndarray, limit: int) -> _EarlyParts | None:
    """:class:`_EarlyParts` when ``keys`` are every entry and unpacking the
    whole segs content stays within ``limit`` pixels (checked before any of
    it is allocated), else None."""
    if DECODE_THREADS < 2 or not keys.size or keys.size != reader.count or keys[0] != 0 or keys[-1] != reader.count - 1:
        return None
    if reader.codec_ids() != [0]:
        return None  # the parts would be other codecs' bytes, not bits
    segs = reader.blocked("segs")
    total = segs.raw_length
    if not total or 8 * total > limit:
        return None
    step = max(1, V2_PART // segs.block_size) * segs.block_size
    return _EarlyParts(reader, 0, total, step)


def _iids(f: "IIDFile", keys: np.ndarray, on_disk: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    """The addresses and domains of ``keys``: on-disk records read in bulk
    (:func:`iidschema.bulk.iid_batch`, every check), no IID object made."""
    addresses, domains = [b""] * keys.size, [b""] * keys.size
    disk_idx = np.flatnonzero(on_disk)
    batch = bulk.iid_batch(f._reader, keys[disk_idx]) if disk_idx.size else None
    if batch is not None:
        raw = batch.raw
        for i, d, dl, al in zip(disk_idx.tolist(), batch.dstart.tolist(), batch.dlen.tolist(), batch.alen.tolist()):
            domains[i], addresses[i] = raw[d : d + dl], raw[d + dl : d + dl + al]
    elif disk_idx.size:  # the bulk walk declined: one by one
        for i, iid in zip(disk_idx.tolist(), f._reader.iids(keys[disk_idx])):
            domains[i], addresses[i] = iid.domain, iid.address
    added = ~on_disk
    for cols, idx, rows in _added_rows(f, keys, added):
        for i, j in zip(idx.tolist(), rows.tolist()):
            domains[i], addresses[i] = cols.domains[j], cols.addresses[j]
        added[idx] = False
    for i in np.flatnonzero(added).tolist():  # entries made by add()
        iid = f._entry(int(keys[i])).iid
        domains[i], addresses[i] = iid.domain, iid.address
    return addresses, domains


def _added_rows(f: "IIDFile", keys: np.ndarray, added: np.ndarray) -> Iterator[tuple]:
    """:meth:`IIDFile._added_rows` of ``keys[added]``, indexes into ``keys``."""
    where = np.flatnonzero(added)
    for cols, idx, rows in f._added_rows(keys[where]):
        yield cols, where[idx], rows


def _unpack_added(cols: "AddedColumns", rows: np.ndarray, idx: np.ndarray, limit: int, buffers: list[np.ndarray],
                  buffer_of: np.ndarray, starts: np.ndarray) -> None:
    """The masks ``rows`` of ``cols`` (selection indexes ``idx``) from its
    packed stream, whose masks are exactly packbits payloads: one
    :func:`~iidschema.codecs.bulk.decode_flat` call."""
    from .codecs.bulk import decode_flat

    pm = cols.packed
    _check_total(int(pm.pixels[rows].sum()), limit, "these masks")
    offsets = pm.starts[rows]
    bits, where = decode_flat(get_codec(0), pm.packed, offsets, pm.starts[rows + 1] - offsets, pm.heights[rows],
                              pm.widths[rows], tight=True)
    buffer_of[idx] = len(buffers)
    starts[idx] = where
    buffers.append(bits)


def _pixels(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _check_total(pixels: int, limit: int, what: str) -> None:
    if pixels > limit:
        raise IIDLimitError(
            f"{what} hold {pixels} pixels, above the limit of {limit} (iidschema.masks.MAX_MASK_PIXELS); "
            "pass max_pixels=... (or set IIDSCHEMA_MAX_MASK_PIXELS) if you trust this file, or read fewer keys"
        )


def _decode_disk(t: bulk.SegmentTable, limit: int, buffers: list[np.ndarray]) -> tuple:
    """Decode the regions of ``t``: one :func:`~iidschema.codecs.bulk.decode_flat`
    call per codec in each part of about :data:`DECODE_CHUNK` payload bytes.

    Returns ``(direct, lazy, places)``: per segment, whether it is one
    region covering its bbox (its mask is that region's output, in place),
    and whether it must be read one record at a time instead (its regions
    overlap far beyond its own pixels, :data:`iidschema.bulk.EAGER_OVERLAP`,
    as only a hostile file's do; or a payload of its codec is malformed:
    the one-record path then reports which, exactly as ``mask()`` does);
    per region, ``places = (buffer, start, rows, columns)`` of its pixels.
    """
    from .codecs.bulk import decode_flat  # imports the built-in codecs: only when decoding

    rh = t.rbox[:, 2] - t.rbox[:, 0]
    rw = t.rbox[:, 3] - t.rbox[:, 1]
    rpix = rh * rw
    seg_pix = _pixels(t.boxes)
    lazy = np.bincount(t.rseg, weights=rpix, minlength=t.count.size) > bulk.EAGER_OVERLAP * seg_pix + 64
    # Everything decoded here, bounded before any of it is allocated.
    decode = ~lazy[t.rseg]
    _check_total(int(rpix[decode].sum()), limit, "the regions of these segments")
    _check_total(int(seg_pix.sum()), limit, "these masks")
    first_row = np.minimum(t.first, max(t.rseg.size - 1, 0))
    direct = (t.count == 1) & (t.rbox[first_row] == t.boxes).all(axis=1) if t.rseg.size else np.zeros(t.count.size, np.bool_)
    rstart = np.zeros(t.rseg.size, dtype=np.int64)
    rbuf = np.full(t.rseg.size, -1, dtype=np.int64)
    # In parts of about DECODE_CHUNK payload bytes: a decoder's temporary
    # arrays (several per payload byte or run) stay small next to its output,
    # and parts decode on two threads (np.unpackbits, gathers and zstd let
    # go of the GIL).
    cuts = np.searchsorted(np.cumsum(t.rlen), np.arange(DECODE_CHUNK, int(t.rlen.sum()), DECODE_CHUNK), side="right")
    jobs = []
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), t.rseg.size]):
        part = np.arange(lo, hi)[decode[lo:hi]]
        codecs = t.rcodec[part]
        jobs.extend((codec_id, part[codecs == codec_id]) for codec_id in np.unique(codecs).tolist())

    def run(job: tuple[int, np.ndarray]) -> tuple | None:
        codec_id, sel = job
        try:
            return decode_flat(get_codec(codec_id), t.u8, t.roff[sel], t.rlen[sel], rh[sel], rw[sel], tight=True)
        except IIDCodecError:
            return None

    if len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            done = list(pool.map(run, jobs))
    else:
        done = [run(job) for job in jobs]
    for (codec_id, sel), result in zip(jobs, done):
        if result is None:
            lazy[t.rseg[sel]] = True
            continue
        bits, where = result
        rbuf[sel] = len(buffers)
        rstart[sel] = where
        buffers.append(bits)
    return direct & ~lazy, lazy, (rbuf, rstart, rh, rw)


def _compose(composed: list, t: bulk.SegmentTable | None, bboxes: np.ndarray, limit: int, buffers: list[np.ndarray],
             buffer_of: np.ndarray, starts: np.ndarray, places: tuple | None) -> None:
    """Masks not in place, in one more buffer: their regions' decoded pixels
    placed (:func:`iidschema.bulk.place_regions`), or the mask of a segment
    read one by one or added in memory copied in."""
    idx = np.array([i for i, _ in composed], dtype=np.int64)
    pix = _pixels(bboxes[idx])
    _check_total(int(pix.sum()), limit, "these masks")
    offs = exclusive_cumsum(pix)
    out = np.zeros(int(offs[-1]), dtype=np.bool_)
    b = len(buffers)
    buffers.append(out)
    buffer_of[idx] = b
    starts[idx] = offs[:-1]
    from_table = np.array([isinstance(what, int) for _, what in composed], dtype=np.bool_)
    if from_table.any():
        assert t is not None and places is not None
        rbuf, rstart, rh, rw = places
        segs = np.array([what for _, what in composed if isinstance(what, int)], dtype=np.int64)
        # Every region of those segments (rows ``j`` of the table): its
        # buffer and start, and where it goes (flat start of the mask, the
        # mask's width, the region's first row and column in it).
        rows = np.repeat(segs, t.count[segs])
        j = np.arange(rows.size) - np.repeat(exclusive_cumsum(t.count[segs])[:-1], t.count[segs]) + t.first[rows]
        owner = np.repeat(np.flatnonzero(from_table), t.count[segs])
        box = bboxes[idx[owner]]
        bulk.place_regions(out, buffers, rbuf[j], rstart[j], offs[owner], box[:, 3] - box[:, 1],
                           t.rbox[j, 0] - box[:, 0], t.rbox[j, 1] - box[:, 1], rh[j], rw[j], t.count[rows] == 1)
    for (i, what), s, (minr, minc, maxr, maxc) in zip(composed, offs[:-1].tolist(), bboxes[idx].tolist()):
        if not isinstance(what, int):
            out[s : s + (maxr - minr) * (maxc - minc)] = what.mask().reshape(-1)  # type: ignore[attr-defined]
