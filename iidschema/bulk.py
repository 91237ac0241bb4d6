"""Reading many records at once: the bulk path behind ``fetch()``.

Parsing records one by one costs a handful of Python and numpy calls per
record; at hundreds of thousands of entries that is most of a fetch.  Here
the record heads of every requested key are parsed with numpy over one copy
of the records' bytes (layouts from the dtypes :mod:`iidschema.schema`
derives from its declarations), the region payloads are decoded codec by
codec with :func:`iidschema.codecs.bulk.decode_flat`, and Python objects
(:class:`~iidschema.model.IID`, :class:`~iidschema.model.Segment`) are made
only when an entry's ``iid``/``seg`` is first touched.

Every check of the one-record parsers (``Reader._parse_segment``,
``_parse_iid``) is made here too, vectorised.  When a record fails one, the
record is handed to the one-record parser, which raises the same precise
error (section, offset) it always did.

Masks are decoded per chunk of segments (about :data:`DECODE_CHUNK` payload
bytes), when the first mask of the chunk is asked for, and handed over to
the caller (see :class:`SegmentBatch`).  Bulk decoding never amplifies: in
each chunk it stops once it has produced :data:`EAGER_PIXELS_PER_BYTE`
pixels per payload byte of the chunk (plus :data:`EAGER_MIN_PIXELS`), and it
skips segments whose regions overlap much or exceed the mask limit.  Those
(a hostile file's 20-byte frame claiming a gigapixel, or legitimately huge,
very compressible masks) decode on ``mask()`` one region at a time, as
before.  A batch owns a copy of the records' bytes, so its entries stay
usable after the file is closed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import masks as _masks
from . import schema
from .codecs import get_codec
from .errors import IIDError, IIDFormatError
from .masks import exclusive_cumsum
from .model import IID, Region, Regions, Segment

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Reader

__all__ = ["IIDBatch", "SegmentBatch", "BULK_MIN", "DECODE_CHUNK", "EAGER_PIXELS_PER_BYTE", "EAGER_MIN_PIXELS", "EAGER_OVERLAP"]

#: Below this many records the one-record path is as fast; the bulk path
#: starts here.
BULK_MIN = 32
#: Bulk decoding of a chunk stops (its remaining segments decode on
#: ``mask()``) once it has produced this many pixels per payload byte of the
#: chunk, plus :data:`EAGER_MIN_PIXELS`: ordinary files stay far below
#: (packbits holds 8 pixels per byte, rle/zstd of the benchmark workload
#: about 15), a decompression bomb (a few bytes claiming a gigapixel) is not
#: decoded in bulk at all.
EAGER_PIXELS_PER_BYTE = 64
EAGER_MIN_PIXELS = 2**24
#: Payload bytes per chunk of segments decoded together.
DECODE_CHUNK = 1 << 16
#: A segment whose regions' pixels add up to more than this many times its
#: own is not decoded in bulk either (overlapping regions must not multiply
#: memory).
EAGER_OVERLAP = 4



def _gather(u8: np.ndarray, pos: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Records of ``dtype`` at byte positions ``pos`` of ``u8`` (all in range).

    A view of ``u8`` whose item ``i`` is the record starting at byte ``i``
    (stride 1, overlapping items), indexed with ``pos``: one index per
    record, where gathering byte by byte needs one per byte.
    """
    if pos.size == 0:
        return np.zeros(0, dtype=dtype)
    at_every_byte = np.ndarray(shape=(u8.size - dtype.itemsize + 1,), dtype=dtype, buffer=u8, strides=(1,))
    return at_every_byte[pos]


def _bbox_cols(b: np.ndarray) -> np.ndarray:
    return np.stack([b["minr"], b["minc"], b["maxr"], b["maxc"]], axis=1).astype(np.int64)


def copy_records(reader: "Reader", offs: np.ndarray, lens: np.ndarray, section: str) -> tuple[bytes, np.ndarray]:
    """One bytes object holding the records ``(offs, lens)`` (absolute), and
    each record's offset in it.

    Records written together are contiguous, so one read of their span is
    usually the cheapest (and, remotely, one request); sparse keys are copied
    record by record instead of dragging the gaps along.
    """
    if offs.size == 0:
        return b"", offs
    ends = offs + lens
    lo, hi = int(offs.min()), int(ends.max())
    total = int(lens.sum())
    if hi - lo <= 2 * total + 65536:
        return bytes(reader.source.read(lo, hi - lo, section)), offs - lo
    parts = [reader.source.read(o, n, section) for o, n in zip(offs.tolist(), lens.tolist())]
    return b"".join(parts), exclusive_cumsum(lens)[:-1]


class IIDBatch:
    """The IID records of many keys, checked; :class:`IID` objects on demand.

    Record ``i``'s domain is ``raw[dstart[i] : dstart[i] + dlen[i]]``, its
    address the ``alen[i]`` bytes after it.
    """

    __slots__ = ("raw", "keys", "dstart", "dlen", "alen", "_lists")

    def __init__(self, raw: bytes, keys: np.ndarray, dstart: np.ndarray, dlen: np.ndarray, alen: np.ndarray):
        self.raw = raw
        self.keys, self.dstart, self.dlen, self.alen = keys, dstart, dlen, alen
        self._lists: tuple[list, list, list, list] | None = None

    def iid(self, i: int) -> IID:
        if self._lists is None:  # Python ints once, for the many calls that follow
            self._lists = (self.keys.tolist(), self.dstart.tolist(), self.dlen.tolist(), self.alen.tolist())
        keys, dstart, dlen, alen = self._lists
        d = dstart[i]
        a = d + dlen[i]
        raw = self.raw
        iid = IID.__new__(IID)
        iid.key, iid.domain, iid.address = keys[i], raw[d:a], raw[a : a + alen[i]]
        return iid

    def find(self, addresses: set[bytes]) -> np.ndarray:
        """Indices of the records whose address may be in ``addresses``: a
        superset, found without making a Python object per record.

        Records are compared on (length, first 8 bytes, last 8 bytes) with
        numpy; callers check the candidates' addresses exactly.  Addresses
        that share all three with a wanted one only cost an extra check.
        """
        if not addresses or self.keys.size == 0:
            return np.zeros(0, dtype=np.int64)
        u8 = np.frombuffer(bytes(8) + self.raw + bytes(8), dtype=np.uint8)
        start = self.dstart + self.dlen + 8  # the address, in the padded buffer
        mine = _ends(u8, start, self.alen)
        wanted = [bytes(8) + a + bytes(8) for a in addresses]
        w = np.concatenate([np.frombuffer(x, dtype=np.uint8) for x in wanted])
        wlen = np.array([len(a) for a in addresses], dtype=np.int64)
        wstart = exclusive_cumsum(wlen + 16)[:-1] + 8
        theirs = _ends(w, wstart, wlen)
        return np.flatnonzero(np.isin(mine, theirs))


def _ends(u8: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """(length, first 8 bytes, last 8 bytes) of each byte string
    ``u8[start:start+length]`` as one structured key (bytes outside a string
    shorter than 8 are zeroed); ``u8`` has 8 bytes of room on both sides."""
    u64 = np.dtype("<u8")
    short = np.minimum(length, 8).astype(np.uint64)
    keep = np.where(short == 8, np.uint64(2**64 - 1), (np.uint64(1) << (short * np.uint64(8))) - np.uint64(1))
    first = _gather(u8, start, u64) & keep
    last = _gather(u8, start + length - 8, u64) >> ((np.uint64(8) - short) * np.uint64(8))
    out = np.empty(length.size, dtype=[("n", "<i8"), ("first", "<u8"), ("last", "<u8")])
    out["n"], out["first"], out["last"] = length, first, last
    return out


def iid_batch(reader: "Reader", keys: np.ndarray) -> IIDBatch | None:
    """The IID records of ``keys`` (int64, in range), verified and checked
    (None: read them one by one, see :func:`_raise_first`)."""
    offs, lens, rows = reader._locate_rows(keys, "iid")
    raw, rel = copy_records(reader, offs, lens, "iids")
    reader._verify_bulk(offs, lens, rows, keys, "iid", raw, rel)
    head = schema.IID_HEAD0_DTYPE
    u8 = np.frombuffer(raw, dtype=np.uint8)
    bad = lens < head.itemsize
    heads = _gather(u8, rel[~bad], head) if (~bad).any() else np.zeros(0, head)
    full = np.zeros(keys.size, dtype=head)
    full[~bad] = heads
    dlen = full["domain_len"].astype(np.int64)
    alen = full["address_len"].astype(np.int64)
    bad |= (full["key"] != keys) | (head.itemsize + dlen + alen != lens)
    if bad.any():
        _raise_first(reader, keys, offs, lens, rows, bad, "iid")
        return None
    return IIDBatch(raw, keys, rel + head.itemsize, dlen, alen)


def _raise_first(reader: "Reader", keys: np.ndarray, offs: np.ndarray, lens: np.ndarray, rows: Any, bad: np.ndarray, kind: str) -> None:
    """Let the one-record parser report the first bad record precisely
    (returns only if that parser accepts the record)."""
    from .reader import _parse_iid

    i = int(np.argmax(bad))
    key, off, n = int(keys[i]), int(offs[i]), int(lens[i])
    section = "iids" if kind == "iid" else "segs"
    try:
        data = reader.source.read(off, n, section)
        if kind == "iid":
            _parse_iid(data, n, key, off)
        else:
            reader._parse_segment(data, n, key, off, reader._info(rows, i))
    except IIDFormatError as exc:
        located = getattr(reader.source, "located", None)  # version 2: a file offset for a content offset
        raise (located(exc) if located is not None else exc) from None
    # Not reached for any file found so far: a check here stricter than the
    # record parser's.  The caller then reads these records one by one.


class SegmentBatch:
    """The segment records of many keys, checked; their masks decoded in
    chunks, on first use, and handed out.

    Per segment ``i``: ``keys``, ``bboxes``, ``areas``; its regions are rows
    ``first[i] .. first[i] + count[i] - 1`` of the region table (absolute
    bbox, codec, payload offset and length in ``raw``).

    Segments are grouped into chunks of about :data:`DECODE_CHUNK` payload
    bytes.  The first ``mask()`` of a segment decodes its whole chunk (one
    :func:`~iidschema.codecs.bulk.decode_flat` per codec); a segment that is
    one region over its whole bbox gets *that* decoded array as its mask (no
    copy: the array is handed over, it belongs to the caller from then on),
    the others are composed, all of the chunk's together
    (:func:`place_regions`), into one more buffer and handed over alike.  Once every
    segment of a chunk has been handed its mask, the batch drops the chunk's
    buffers: memory follows what the caller keeps, not the file.  A second
    ``mask()`` of a segment decodes it again from its regions.

    ``state[i]``: :data:`PENDING` (its chunk is not decoded yet), ``>= 0``
    (its mask in place: ``bufs[state[i]][start[i]:]``), :data:`LAZY` (never
    decoded in bulk: a decompression bomb, a codec that failed, or a mask
    handed out already).
    """

    __slots__ = ("raw", "keys", "bboxes", "areas", "components", "first", "count", "rbbox", "rcodec", "roff",
                 "rlen", "bufs", "state", "start", "chunk", "chunk_bounds", "left",
                 "chunk_bufs", "eager", "u8", "lock")

    LAZY, PENDING = -1, -3

    def segment(self, i: int) -> Segment:
        seg = Segment.__new__(Segment)
        seg.key, seg.bbox, seg.area = self.keys[i], self.bboxes[i], self.areas[i]
        seg._regions, seg.source, seg.components = None, None, self.components
        seg._batch, seg._bi = self, i
        return seg

    def _rows(self, i: int) -> range:
        first = int(self.first[i])
        return range(first, first + int(self.count[i]))

    def regions(self, i: int) -> Regions:
        rows = self._rows(i)
        raw = self.raw
        out = Regions()
        for r, bbox, codec, o, n in zip(rows, self.rbbox[rows].tolist(), self.rcodec[rows].tolist(),
                                        self.roff[rows].tolist(), self.rlen[rows].tolist()):
            out.append(Region.raw(tuple(bbox), codec, raw[o : o + n]))
        return out

    def view(self, i: int) -> np.ndarray | None:
        """Segment ``i``'s decoded mask as a read-only view when it is one
        region's pixels in place (else None), without handing it over: for
        readers that do not keep it."""
        with self.lock:
            b = self.state[i]
            if b == self.PENDING:
                _decode_chunk(self, self.chunk[i])
                b = self.state[i]
            if b < 0:
                return None
            minr, minc, maxr, maxc = self.bboxes[i]
            s = self.start[i]
            view = self.bufs[b][s : s + (maxr - minr) * (maxc - minc)].reshape(maxr - minr, maxc - minc)
        view.flags.writeable = False
        return view

    def mask(self, i: int) -> np.ndarray | None:
        """Segment ``i``'s whole mask, now the caller's; None when it must be
        decoded from its regions.

        Under the batch's lock: threads may ask for masks of one fetch at
        once, and a chunk's state (decoded, handed out, released) is shared.
        """
        with self.lock:
            b = self.state[i]
            if b == self.PENDING:
                _decode_chunk(self, self.chunk[i])
                b = self.state[i]
            if b == self.LAZY:
                return None
            minr, minc, maxr, maxc = self.bboxes[i]
            h, w = maxr - minr, maxc - minc
            s = self.start[i]
            out = self.bufs[b][s : s + h * w].reshape(h, w)
            self.state[i] = self.LAZY  # handed over: the next mask() decodes afresh
            c = self.chunk[i]
            self.left[c] -= 1
            if not self.left[c]:
                for b in self.chunk_bufs[c]:
                    self.bufs[b] = None  # every mask of the chunk is out: let the caller own the memory
        return out


class SegmentTable(NamedTuple):
    """The segment records of many keys, parsed and checked, as columns.

    Per segment ``i``: ``boxes[i]`` (minr, minc, maxr, maxc), ``areas[i]``,
    and regions ``first[i] .. first[i] + count[i] - 1``.  Per region ``j``
    (in segment order): ``rseg[j]`` (its segment), ``rbox[j]`` (absolute),
    ``rcodec[j]``, and its payload ``u8[roff[j] : roff[j] + rlen[j]]``.
    ``raw`` owns the bytes ``u8`` views.
    """

    raw: bytes
    u8: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    first: np.ndarray
    count: np.ndarray
    rseg: np.ndarray
    rbox: np.ndarray
    rcodec: np.ndarray
    roff: np.ndarray
    rlen: np.ndarray


def segment_table(reader: "Reader", keys: np.ndarray) -> SegmentTable | None:
    """The segment records of ``keys`` (int64, in range), verified and
    checked as the one-record parser checks them, as columns (None: read
    them one by one, see :func:`_raise_first`)."""
    offs, lens, rows = reader._locate_rows(keys, "seg")
    if reader.version >= 2:
        from .reader2 import check_bulk_size

        # Version-2 records are decompressed by this read: bounded first.
        check_bulk_size(lens, _masks.MAX_MASK_PIXELS)
    raw, rel = copy_records(reader, offs, lens, "segs")
    reader._verify_bulk(offs, lens, rows, keys, "seg", raw, rel)
    u8 = np.frombuffer(raw, dtype=np.uint8)
    walk = (_walk_v0, _walk_v1, _walk_v2)[min(reader.version, 2)]
    boxes, areas, table, bad = walk(u8, rel, lens, keys, rows)
    if bad.any():
        _raise_first(reader, keys, offs, lens, rows, bad, "seg")
        return None
    rseg, rbox, rcodec, rpoff, rplen = table
    order = np.argsort(rseg, kind="stable")  # region j of every segment was found in pass j
    rseg, rbox, rcodec, rpoff, rplen = rseg[order], rbox[order], rcodec[order], rpoff[order], rplen[order]
    count = np.bincount(rseg, minlength=keys.size)
    first = exclusive_cumsum(count)[:-1]
    return SegmentTable(raw, u8, boxes, areas, first, count, rseg, rbox, rcodec, rpoff, rplen)


def segment_batch(reader: "Reader", keys: np.ndarray, decode: bool = True) -> SegmentBatch | None:
    """The segment records of ``keys`` (int64, in range), verified, checked,
    and (with ``decode``) their masks decoded where that is safe (None: read
    them one by one, see :func:`_raise_first`)."""
    t = segment_table(reader, keys)
    if t is None:
        return None
    batch = SegmentBatch()
    batch.raw = t.raw
    batch.keys = keys.tolist()
    batch.bboxes = list(zip(*t.boxes.T.tolist()))  # tuples straight from the columns
    batch.areas = t.areas.tolist()
    batch.components = reader.version == 0
    # Per segment, Python lists of what every Segment / mask() needs; per
    # region, numpy rows (read when a chunk is decoded, and by regions()).
    batch.first, batch.count = t.first, t.count
    batch.rbbox = t.rbox
    batch.rcodec, batch.roff, batch.rlen = t.rcodec, t.roff, t.rlen  # numpy: read per region, rarely
    batch.bufs = []
    batch.u8 = t.u8
    batch.lock = threading.Lock()
    _plan(batch, t.boxes, t.first, t.count, t.rseg, t.rbox, t.rlen, decode)
    return batch


def _walk_v0(u8: np.ndarray, rel: np.ndarray, lens: np.ndarray, keys: np.ndarray, rows: Any):
    """Version 0: segment heads, then regions until the record ends."""
    shead, rhead = schema.SEG_HEAD0_DTYPE, schema.REGION_HEAD0_DTYPE
    bad = lens < shead.itemsize
    heads = np.zeros(keys.size, dtype=shead)
    heads[~bad] = _gather(u8, rel[~bad], shead)
    boxes = _bbox_cols(heads["bbox"])
    bad |= (heads["key"] != keys) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    pos = rel + shead.itemsize
    end = rel + lens

    def step(active: np.ndarray, p: np.ndarray):
        h = _gather(u8, p, rhead)
        rbox = _bbox_cols(h["bbox"])
        rlen = h["len"].astype(np.int64)
        payload = (rbox[:, 2] - rbox[:, 0]) * (rbox[:, 3] - rbox[:, 1])
        ok = rlen == rhead.itemsize + (payload + 7) // 8
        return rbox, np.zeros(active.size, np.int64), p + rhead.itemsize, rlen - rhead.itemsize, ok

    table, bad = _walk_regions(pos, end, boxes, bad, rhead.itemsize, step, None)
    return boxes, heads["area"].astype(np.int64), table, bad


def _walk_v1(u8: np.ndarray, rel: np.ndarray, lens: np.ndarray, keys: np.ndarray, rows: np.ndarray):
    """Version 1: bbox and area from the LUT rows, a region count in the head."""
    shead, rhead = schema.SEG_HEAD1_DTYPE, schema.REGION_HEAD1_DTYPE
    boxes = _bbox_cols(rows["bbox"])
    bad = (lens < shead.itemsize) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    heads = np.zeros(keys.size, dtype=shead)
    heads[~bad] = _gather(u8, rel[~bad], shead)
    nreg = heads["region_count"].astype(np.int64)
    bad |= (heads["key"] != keys) | (nreg > (lens - shead.itemsize) // rhead.itemsize)
    pos = rel + shead.itemsize
    end = rel + lens

    def step(active: np.ndarray, p: np.ndarray):
        h = _gather(u8, p, rhead)
        plen = h["length"]  # uint64: compare before converting
        room = (end[active] - p - rhead.itemsize).astype(np.uint64)
        ok = plen <= room
        return _bbox_cols(h["bbox"]), h["codec"].astype(np.int64), p + rhead.itemsize, np.where(ok, plen, 0).astype(np.int64), ok

    table, bad = _walk_regions(pos, end, boxes, bad, rhead.itemsize, step, nreg)
    return boxes, rows["area"].astype(np.int64), table, bad


def _walk_v2(u8: np.ndarray, rel: np.ndarray, lens: np.ndarray, keys: np.ndarray, rows: np.ndarray):
    """Version 2: one region over the bbox, everything from the LUT rows."""
    from .reader2 import segment_rows

    return segment_rows(rows, rel, lens)


def _walk_regions(pos: np.ndarray, end: np.ndarray, boxes: np.ndarray, bad: np.ndarray, head_size: int, step: Any, nreg: Any):
    """Walk the regions of every segment in passes (pass j reads region j of
    each segment that has one), checking what the record parsers check:
    a whole head, a non-empty bbox inside the segment's, a payload inside
    the record, and (version 1) exactly ``nreg`` regions filling the record.
    """
    parts: list[tuple] = []
    pos = pos.copy()
    if nreg is None:
        active = np.flatnonzero(~bad & (pos < end))
    else:
        active = np.flatnonzero(~bad & (nreg > 0))
    j = 0
    while active.size:
        p = pos[active]
        short = end[active] - p < head_size
        if short.any():
            bad[active[short]] = True
            active, p = active[~short], p[~short]
        rbox, codec, poff, plen, ok = step(active, p)
        sb = boxes[active]
        ok &= (sb[:, 0] <= rbox[:, 0]) & (rbox[:, 0] < rbox[:, 2]) & (rbox[:, 2] <= sb[:, 2])
        ok &= (sb[:, 1] <= rbox[:, 1]) & (rbox[:, 1] < rbox[:, 3]) & (rbox[:, 3] <= sb[:, 3])
        ok &= poff + plen <= end[active]
        bad[active[~ok]] = True
        active = active[ok]
        parts.append((active, rbox[ok], codec[ok], poff[ok], plen[ok]))
        pos[active] = poff[ok] + plen[ok]
        j += 1
        if nreg is None:
            active = active[pos[active] < end[active]]
        else:
            active = active[nreg[active] > j]
    if nreg is not None:
        bad |= ~bad & (pos != end)  # bytes after the last region (or too few regions)
    if parts:
        table = tuple(np.concatenate(cols) for cols in zip(*parts))
    else:
        table = (np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return table, bad


def _plan(batch: SegmentBatch, boxes: np.ndarray, first: np.ndarray, count: np.ndarray, rseg: np.ndarray,
          rbox: np.ndarray, rplen: np.ndarray, decode: bool) -> None:
    """Say which segments are decoded in bulk (see the module docstring) and
    group them into chunks of about :data:`DECODE_CHUNK` payload bytes."""
    nseg = count.size
    rh = rbox[:, 2] - rbox[:, 0]
    rw = rbox[:, 3] - rbox[:, 1]
    seg_pix = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    pix = np.bincount(rseg, weights=rh * rw, minlength=nseg)
    # Never above the library's mask limit (read now: users may raise it);
    # such segments fail on mask() exactly as when read one by one.
    eager = (pix <= EAGER_OVERLAP * seg_pix + 64) & (count > 0) & (seg_pix <= _masks.MAX_MASK_PIXELS) & decode
    pay = np.bincount(rseg, weights=rplen, minlength=nseg)
    chunk = (np.cumsum(pay) // DECODE_CHUNK).astype(np.int64)
    _, chunk = np.unique(chunk, return_inverse=True)  # consecutive chunk numbers
    nchunk = int(chunk.max()) + 1 if nseg else 0
    # The amplification budget, per chunk: pixels produced so far in the
    # chunk (regions decoded, and masks composed from them) against the
    # chunk's payload bytes.
    fr = np.minimum(first, max(rseg.size - 1, 0))
    whole = (count == 1) & (rbox[fr] == boxes).all(axis=1) if rseg.size else np.zeros(nseg, dtype=np.bool_)
    produced = np.cumsum(np.where(eager, np.where(whole, pix, pix + seg_pix), 0))
    bounds = exclusive_cumsum(np.bincount(chunk, minlength=nchunk))
    before = np.concatenate([[0], produced])[bounds[:-1]]
    budget = EAGER_PIXELS_PER_BYTE * np.bincount(chunk, weights=pay, minlength=nchunk) + EAGER_MIN_PIXELS
    eager &= produced - before[chunk] <= budget[chunk]
    batch.eager = eager
    batch.chunk = chunk.tolist()
    batch.chunk_bounds = bounds
    batch.left = np.bincount(chunk, weights=eager, minlength=nchunk).astype(np.int64).tolist()
    batch.chunk_bufs = [[] for _ in range(nchunk)]
    batch.state = np.where(eager, SegmentBatch.PENDING, SegmentBatch.LAZY).tolist()
    batch.start = [0] * nseg


def _decode_chunk(batch: SegmentBatch, c: int) -> None:
    """Decode chunk ``c``'s segments, one :func:`decode_flat` per codec, and
    set their states (see :class:`SegmentBatch`)."""
    from .codecs.bulk import decode_flat  # imports the built-in codecs: only when decoding

    lo, hi = int(batch.chunk_bounds[c]), int(batch.chunk_bounds[c + 1])
    eager = batch.eager[lo:hi].copy()
    count = batch.count[lo:hi]
    first = batch.first[lo:hi]
    r_lo = int(first[0]) if hi > lo else 0
    r_hi = int(first[-1] + count[-1]) if hi > lo else 0
    rbox = batch.rbbox[r_lo:r_hi]
    rcodec = batch.rcodec[r_lo:r_hi]
    rseg = np.repeat(np.arange(hi - lo), count)  # segment of each region, in the chunk
    rh = rbox[:, 2] - rbox[:, 0]
    rw = rbox[:, 3] - rbox[:, 1]
    rbuf = np.full(rseg.size, -1, dtype=np.int64)
    rstart = np.zeros(rseg.size, dtype=np.int64)
    reager = eager[rseg]
    for codec_id in np.unique(rcodec[reager]).tolist():
        sel = np.flatnonzero(reager & (rcodec == codec_id))
        try:
            bits, starts = decode_flat(get_codec(codec_id), batch.u8, batch.roff[r_lo:r_hi][sel],
                                       batch.rlen[r_lo:r_hi][sel], rh[sel], rw[sel])
        except IIDError:
            eager[rseg[sel]] = False  # decoded (and reported) region by region on mask()
            continue
        rbuf[sel] = len(batch.bufs)
        rstart[sel] = starts
        batch.chunk_bufs[c].append(len(batch.bufs))
        batch.bufs.append(bits)
    boxes = np.asarray(batch.bboxes[lo:hi], dtype=np.int64).reshape(-1, 4)
    fr = np.minimum(first - r_lo, max(rseg.size - 1, 0))
    direct = eager & (count == 1) & (rbox[fr] == boxes).all(axis=1)
    state = np.where(direct, rbuf[fr], SegmentBatch.LAZY)  # composed ones: set below
    # Segments that could not be decoded here leave the chunk's count.
    batch.left[c] -= int(batch.eager[lo:hi].sum() - eager.sum())
    batch.state[lo:hi] = state.tolist()
    batch.start[lo:hi] = rstart[fr].tolist()
    compose = np.flatnonzero(eager & ~direct)
    if compose.size:
        # Composed now, all together, into one more buffer of the chunk;
        # from then on they are handed over like the others.
        heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        offs = exclusive_cumsum(heights[compose] * widths[compose])
        zone = np.zeros(int(offs[-1]), dtype=np.bool_)
        dstart = np.zeros(hi - lo, dtype=np.int64)
        dstart[compose] = offs[:-1]
        sel = np.flatnonzero((eager & ~direct)[rseg])
        seg = rseg[sel]
        place_regions(zone, batch.bufs, rbuf[sel], rstart[sel], dstart[seg], widths[seg], rbox[sel, 0] - boxes[seg, 0],
                      rbox[sel, 1] - boxes[seg, 1], rh[sel], rw[sel], count[seg] == 1)
        zb = len(batch.bufs)
        batch.bufs.append(zone)
        batch.chunk_bufs[c].append(zb)
        state[compose] = zb
        batch.state[lo:hi] = state.tolist()
        rs = rstart[fr]
        rs[compose] = offs[:-1]
        batch.start[lo:hi] = rs.tolist()
    if not batch.left[c]:
        for b in batch.chunk_bufs[c]:
            batch.bufs[b] = None


#: Region pixels placed per numpy pass in :func:`place_regions` (its index arrays
#: take 8 bytes per pixel; small enough that the allocator reuses them).
PLACE_CHUNK = 1 << 16
#: Regions of more pixels than this are placed with one slice assignment
#: each (about the cost of placing this many pixels one by one).
PLACE_SLICE = 512


def place_regions(out: np.ndarray, buffers: list[np.ndarray], rbuf: np.ndarray, rstart: np.ndarray, dstart: np.ndarray,
                  dwidth: np.ndarray, r0: np.ndarray, c0: np.ndarray, rh: np.ndarray, rw: np.ndarray, alone: np.ndarray) -> None:
    """Set in ``out`` the True pixels of many regions: region ``j`` is the
    ``(rh[j], rw[j])`` block at ``buffers[rbuf[j]][rstart[j]:]``, and goes to
    rows ``r0[j]..`` and columns ``c0[j]..`` of the mask that starts at
    ``out[dstart[j]]`` with width ``dwidth[j]``; ``out`` is zero there, and
    ``alone[j]`` says the region is its mask's only one.

    Large regions are OR'd in with one slice assignment each.  Small ones
    (version 0 stores one region per connected component: many of a few
    pixels) are placed vectorised over their pixels, at most
    :data:`PLACE_CHUNK` per pass, setting only the True ones (which is the
    OR of overlapping regions): a slice assignment per region would cost far
    more than its few pixels.
    """
    size = rh * rw
    big = size > PLACE_SLICE
    for b, rs, s, w, r, c, hh, ww, one in zip(*(a[big].tolist() for a in (rbuf, rstart, dstart, dwidth, r0, c0, rh, rw, alone))):
        hit = buffers[b][rs : rs + hh * ww].reshape(hh, ww)
        dest = out[s : s + (r + hh) * w].reshape(-1, w)[r:, c : c + ww]
        if one:
            dest[...] = hit
        else:
            np.logical_or(dest, hit, out=dest)

    # The small ones: per source buffer, in parts of about PLACE_CHUNK pixels
    # (one thread: np.repeat holds the GIL, two measured slower).
    for b in np.unique(rbuf[~big]).tolist():
        sel = np.flatnonzero((rbuf == b) & ~big)
        ends = np.cumsum(size[sel])
        cuts = np.searchsorted(ends, np.arange(PLACE_CHUNK, int(ends[-1]) if ends.size else 0, PLACE_CHUNK), side="right")
        for part in np.split(sel, cuts):
            if part.size:
                _place_pixels(out, buffers[b], rstart[part], dstart[part], dwidth[part], r0[part], c0[part], rh[part], rw[part])


def _place_pixels(out: np.ndarray, src_buf: np.ndarray, rstart: np.ndarray, dstart: np.ndarray, dwidth: np.ndarray,
                  r0: np.ndarray, c0: np.ndarray, h: np.ndarray, w: np.ndarray) -> None:
    """:func:`place_regions` for small regions of one buffer, vectorised
    over their pixels.  Row by row, a pixel's place in the mask is its place
    in the source plus a constant per region row: no division per pixel."""
    row_region = np.repeat(np.arange(h.size), h)
    row_in_region = np.arange(row_region.size, dtype=np.int64) - np.repeat(exclusive_cumsum(h)[:-1], h)
    src_row = rstart[row_region] + row_in_region * w[row_region]
    dest_row = dstart[row_region] + (r0[row_region] + row_in_region) * dwidth[row_region] + c0[row_region]
    row_width = w[row_region]
    first = exclusive_cumsum(row_width)
    src = np.arange(int(first[-1]), dtype=np.int64)
    src += np.repeat(src_row - first[:-1], row_width)
    hit = np.flatnonzero(src_buf[src])
    src += np.repeat(dest_row - src_row, row_width)  # now the places in the mask
    out[src[hit]] = True
