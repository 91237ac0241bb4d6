"""Reading version 2: version 1's sections, stored in compressed blocks.

A :class:`Reader2` reads the header and section table as version 1 does,
then opens a :class:`~iidschema.blocked.BlockedSection` per blocked section
(its block table checked against the header's CRC) and reads through a
:class:`~iidschema.blocked.ContentSource`: the content of each section at a
virtual base of its own.  IID records, groups and both indexes have their
version-1 layouts in that content, so their parsers, the bulk walks and the
index readers are version 1's.  What is new is read here: the columnar LUT
(one block per :data:`~iidschema.schema.LUT_CHUNK2` entries, decoded with
:func:`~iidschema.schema.planar_to_records`) and bare segment payloads (a
segment is one region over its bbox, whose codec and length the LUT row
gives).

Integrity is checked per block (CRC32C of the stored block before it is
decompressed, and its decompressed size), so records carry no CRC of their
own.  Errors found in a section's content name the section and the file
offset of the block holding it (the content offset is in the message).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from . import masks as _masks
from . import schema
from .blocked import BlockedSection, ContentSource, _Cache
from .errors import IIDChecksumError, IIDFormatError, IIDLimitError
from .model import Region, Regions, Segment
from .reader import Reader1, _section_table, crc32c, outside, parse
from .source import ByteSource

__all__ = ["Reader2", "ROWS_DTYPE"]

#: Decoded LUT rows: the stored fields (:data:`~iidschema.schema.LutEntry2`)
#: and each record's offset in its section's content, computed from the
#: chunk's bases and the lengths before it.
ROWS_DTYPE = np.dtype(schema.LUT2_DTYPE.descr + [("iid_offset", "<u8"), ("seg_offset", "<u8")])
assert all(ROWS_DTYPE.fields[n][1] == schema.LUT2_DTYPE.fields[n][1] for n in schema.LUT2_DTYPE.names)

F = TypeVar("F", bound=Callable[..., Any])

#: Up to this many keys, :meth:`Reader2._rows` decodes their rows alone
#: instead of their whole chunks.
SPARSE_ROWS = 64
#: Rows decoded alone that a reader keeps.
SPARSE_KEEP = 1 << 16

#: No codec needs more than a byte per pixel: a segment payload longer than
#: its bbox's pixels plus this is refused before it is read (a blocked
#: section could otherwise make a small file decompress to any size).
PAYLOAD_SLACK = schema.PAYLOAD_SLACK2


class _Sections(Mapping):
    """name -> (virtual base, content length) of every section, the length of
    a blocked section read (its head) only when asked for."""

    def __init__(self, source: ContentSource):
        self.source = source
        self.index = {name: i for i, (name, _, _, _) in enumerate(source.sections)}

    def __getitem__(self, name: str) -> tuple[int, int]:
        i = self.index[name]
        _, _, size, blocked = self.source.sections[i]
        return self.source.base(i), (blocked.raw_length if blocked is not None else size)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, name: object) -> bool:
        return name in self.index


def _located(method: F) -> F:
    """Report errors with file offsets (see :meth:`ContentSource.located`)."""

    @functools.wraps(method)
    def wrapper(self: "Reader2", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except IIDFormatError as exc:
            raise self.source.located(exc) from None

    return wrapper  # type: ignore[return-value]


class Reader2(Reader1):
    """Version 2 (see the module docstring).  ``source`` is the
    :class:`~iidschema.blocked.ContentSource`; ``file_source`` the file."""

    source: ContentSource

    def __init__(self, source: ByteSource, header: Any):
        self.file_source = source
        self.version = header.version
        self.rformat = header.rformat
        self.count = header.entry_count
        sections, self._crcs, self._unknown = _section_table(source, header)
        cache = _Cache()
        self._blocked: dict[str, BlockedSection] = {}
        table: list[tuple[str, int, int, BlockedSection | None]] = []
        for i, (name, (off, length)) in enumerate(sorted(sections.items(), key=lambda item: item[1][0])):
            sid = schema.SectionId.IDS[name]
            if sid in schema.BLOCKED_SECTIONS2:
                # Nothing of it is read until it is used (open stays constant in N).
                blocked = BlockedSection(source, name, off, length, self._crcs[name], cache, i)
                self._blocked[name] = blocked
                table.append((name, off, -1, blocked))
            else:
                table.append((name, off, length, None))
        self.source = ContentSource(source, table)
        self._sections = _Sections(self.source)
        self._file_sections = sections
        self._lut_checked = False
        # The LUT's 20-byte head, now: the entry count in the header is
        # trusted by every query, and this is what confirms it.
        self._check_lut()
        self._lut = None
        self._chunks: dict[int, np.ndarray] = {}
        self._sparse: dict[int, np.void] = {}  # rows decoded alone (an IID and a segment read need the same row)
        self._verified_sections: set[str] = set()
        self._groups_read: Any = None
        self._spatial: Any = None
        self._address: Any = None
        self._check_codecs()

    # -- layout and checksums ----------------------------------------------

    def sections(self) -> dict[str, tuple[int, int]]:
        """Every known section: name -> (file offset, stored length)."""
        return dict(self._file_sections)

    def blocked(self, name: str) -> BlockedSection | None:
        """The :class:`BlockedSection` of ``name`` (None for a plain section)."""
        return self._blocked.get(name)

    def section_bytes(self, name: str) -> Any:
        """A plain section's bytes checked against its CRC, or a blocked
        section's whole content (every block checked)."""
        off, length = self._sections[name]
        data = self.source.read(off, length, name)
        if name not in self._blocked and name not in self._verified_sections:
            if crc32c(data) != self._crcs[name]:
                raise IIDChecksumError(f"section {name!r} is damaged (checksum mismatch)", section=name,
                                       offset=self._file_sections[name][0])
            self._verified_sections.add(name)
        return data

    def checked_reader(self, name: str) -> Any:
        base, size = self._sections[name]
        source = self.source

        def read(o: int, n: int) -> Any:
            if o < base or n < 0 or o + n > base + size:
                raise IIDFormatError(f"read [{o}, {o + n}) outside section {name!r}", section=name, offset=o)
            return source.read(o, n, name)

        return read

    # -- LUT ----------------------------------------------------------------

    def _check_lut(self) -> None:
        if self._lut_checked:
            return
        lut = self._blocked["lut"]
        if lut.raw_length != schema.lut2_size(self.count):
            raise IIDFormatError(f"LUT holds {lut.raw_length} bytes, {self.count} entries need {schema.lut2_size(self.count)}",
                                 section="lut", offset=lut.offset)
        if self.count and lut.block_size != schema.LUT_CHUNK2_SIZE:
            raise IIDFormatError(f"LUT blocks must be {schema.LUT_CHUNK2_SIZE} bytes (one chunk of "
                                 f"{schema.LUT_CHUNK2} entries), not {lut.block_size}", section="lut", offset=lut.offset + 8)
        self._lut_checked = True

    def _decode(self, c: int, block: bytes | None = None, idx: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``c`` of the LUT decoded (rows ``idx`` of it only, when
        given), errors located at its block."""
        lut = self._blocked["lut"]
        m = min(schema.LUT_CHUNK2, self.count - c * schema.LUT_CHUNK2)
        try:
            data = lut.block(c) if block is None else block
            return decode_chunk(data, m) if idx is None else decode_rows(data, m, idx)
        except IIDFormatError as exc:
            if exc.section is not None:
                raise
            raise IIDFormatError(f"{exc.message} (chunk {c})", section="lut", offset=lut.where(c * schema.LUT_CHUNK2_SIZE)[1]) from None

    def _chunk(self, c: int, block: bytes | None = None) -> np.ndarray:
        """Chunk ``c`` of the LUT decoded (:data:`ROWS_DTYPE`) and kept."""
        self._check_lut()
        rows = self._chunks.get(c)
        if rows is None:
            rows = self._chunks[c] = self._decode(c, block)
        return rows

    @property
    def lut(self) -> np.ndarray:
        """Every LUT row decoded (:data:`ROWS_DTYPE`: the stored fields and
        each record's offset): decoded once and kept, read-only."""
        if not self.count:
            return np.zeros(0, ROWS_DTYPE)
        return self._rows(np.arange(self.count, dtype=np.int64))

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """LUT rows of ``keys``: each chunk they touch decompressed and
        decoded once (its block verified), then kept."""
        self.source.ensure_open()
        self._check_lut()
        chunk = schema.LUT_CHUNK2
        if keys.size <= SPARSE_ROWS:
            # A few keys (a random read, a small group): their rows only, from
            # the chunks' blocks (cached), not every row of every chunk.
            rows = np.empty(keys.size, dtype=ROWS_DTYPE)
            for i, key in enumerate(keys.tolist()):
                c, j = divmod(key, chunk)
                done = self._chunks.get(c)
                if done is not None:
                    rows[i] = done[j]
                    continue
                row = self._sparse.get(key)
                if row is None:
                    if len(self._sparse) >= SPARSE_KEEP:
                        self._sparse.clear()
                    row = self._sparse[key] = self._decode(c, idx=np.array([j]))[0]
                rows[i] = row
            return rows
        if keys.size * ROWS_DTYPE.itemsize > _masks.MAX_MASK_PIXELS:
            # The LUT is compressed: a small file may claim many entries.
            raise IIDLimitError(f"the LUT rows of {keys.size} entries take {keys.size * ROWS_DTYPE.itemsize} bytes, above the "
                                f"limit of {_masks.MAX_MASK_PIXELS} (iidschema.masks.MAX_MASK_PIXELS); read fewer keys at once, "
                                "or raise the limit if you trust this file")
        if keys.size == self.count and keys[0] == 0 and keys[-1] == self.count - 1 and (np.diff(keys) == 1).all():
            return self._all_rows()
        which = keys // chunk
        chunks = np.unique(which).tolist()
        missing = [c for c in chunks if c not in self._chunks]
        if len(missing) > 1:  # neighbours in one read of the file, decompressed together
            lo, hi = missing[0], missing[-1]
            if hi - lo + 1 <= 2 * len(missing):
                blocks = self._blocked["lut"].blocks(lo, hi, keep=False)
                full = [c for c in missing if (c + 1) * chunk <= self.count]
                if len(full) > 1:  # whole chunks decoded together: a numpy pass per field, not per chunk
                    try:
                        rows = decode_chunks([blocks[c - lo] for c in full])
                    except IIDFormatError:
                        pass  # one chunk at a time below, for a message naming it
                    else:
                        for i, c in enumerate(full):
                            self._chunks[c] = rows[i]
                for c in missing:
                    self._chunk(c, blocks[c - lo])
        if len(chunks) == 1:
            return self._chunk(chunks[0])[keys - chunks[0] * chunk]
        rows = np.empty(keys.size, dtype=ROWS_DTYPE)
        for c in chunks:
            sel = which == c
            rows[sel] = self._chunk(c)[keys[sel] - c * chunk]
        return rows

    def _all_rows(self) -> np.ndarray:
        """Every LUT row (kept as :attr:`lut`): all blocks read in one range
        and decompressed on two threads, then every whole chunk decoded in
        one pass into a single array (the chunks are views of it)."""
        if self._lut is not None:
            return self._lut
        chunk, count = schema.LUT_CHUNK2, self.count
        nchunks = -(-count // chunk)
        blocks = self._blocked["lut"].blocks(0, nchunks - 1, keep=False)
        rows = np.empty(count, dtype=ROWS_DTYPE)
        full = count // chunk
        try:
            if full:
                decode_chunks(blocks[:full], out=rows[: full * chunk])
            if full < nchunks:
                decode_chunks(blocks[full:], count - full * chunk, out=rows[full * chunk :])
        except IIDFormatError:
            for c in range(nchunks):  # one chunk at a time, for a message naming the bad one
                self._decode(c, blocks[c])
            raise
        rows.flags.writeable = False  # shared by every caller (and IIDFile.lut)
        for c in range(nchunks):
            self._chunks[c] = rows[c * chunk : (c + 1) * chunk]
        self._lut = rows
        return rows

    def _locate_rows(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        section = "iids" if kind == "iid" else "segs"
        self._check_keys(keys)
        rows = self._rows(keys)
        rel = rows[f"{kind}_offset"]
        length = rows[f"{kind}_length"].astype(np.uint64)
        base, size = self._sections[section]
        bad = outside(rel, length, size)
        if kind == "seg":
            pixels = rows["height"].astype(np.uint64) * rows["width"].astype(np.uint64)
            too_long = length > pixels + np.uint64(PAYLOAD_SLACK)
            if too_long.any() and not bad.any():
                i = int(np.argmax(too_long))
                raise self._row_error(int(keys[i]), f"segment payload of {int(length[i])} bytes for a {int(pixels[i])}-pixel "
                                      "bbox (no codec needs more than a byte per pixel)")
        if bad.any():
            i = int(np.argmax(bad))
            raise self._row_error(int(keys[i]), f"{kind} record [{int(rel[i])}, {int(rel[i]) + int(length[i])}) lies outside "
                                  f"the {size}-byte content of the {section} section")
        return base + rel.astype(np.int64), length.astype(np.int64), rows

    def _row_error(self, key: int, message: str) -> IIDFormatError:
        lut = self._blocked["lut"]
        _, at = lut.where((key // schema.LUT_CHUNK2) * schema.LUT_CHUNK2_SIZE)
        return IIDFormatError(f"LUT row {key}: {message}", section="lut", offset=at)

    def _locate(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, list]:
        offs, lens, rows = self._locate_rows(keys, kind)
        if kind == "iid":
            return offs, lens, [None] * keys.size
        return offs, lens, [self._info(rows, i) for i in range(keys.size)]

    def _info(self, rows: np.ndarray, i: int) -> Any:
        row = rows[i]
        minr, minc = int(row["minr"]), int(row["minc"])
        return (None, minr, minc, minr + int(row["height"]), minc + int(row["width"]), int(row["area"]), int(row["codec"]))

    def _verify_bulk(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: every block was verified when it was decompressed."""

    def _verify(self, data: Any, key: int, kind: str, at: int, info: Any) -> None:
        """Nothing to do: every block was verified when it was decompressed."""

    def _check_bbox(self, key: int, minr: int, minc: int, maxr: int, maxc: int) -> None:
        if maxr > schema.MAX_COORD_V1 or maxc > schema.MAX_COORD_V1:
            raise self._row_error(key, f"bbox {(minr, minc, maxr, maxc)} reaches past the largest coordinate {schema.MAX_COORD_V1}")

    def _parse_segment(self, data: Any, length: int, key: int, off: int, info: Any) -> Segment:
        _, minr, minc, maxr, maxc, area, codec = info
        self._check_bbox(key, minr, minc, maxr, maxc)
        regions = Regions()
        if maxr > minr and maxc > minc:
            regions.append(Region.raw((minr, minc, maxr, maxc), codec, bytes(data)))
        elif length:
            raise self._row_error(key, f"an empty bbox {(minr, minc, maxr, maxc)} with a {length}-byte payload")
        return Segment(key, (minr, minc, maxr, maxc), area, regions, components=False)

    def heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
        rows = self._rows(keys)
        boxes = bboxes_of(rows)
        over = (boxes[:, 2] > schema.MAX_COORD_V1) | (boxes[:, 3] > schema.MAX_COORD_V1)
        if over.any():
            i = int(np.argmax(over))
            self._check_bbox(int(keys[i]), *boxes[i].tolist())
        return boxes, rows["area"].astype(np.int64)

    # -- records, groups, meta, indexes: version 1's, errors located ---------

    iids = _located(Reader1.iids)
    segments = _located(Reader1.segments)
    group_table = _located(Reader1.group_table)
    group_keys = _located(Reader1.group_keys)
    candidates = _located(Reader1.candidates)
    lookup = _located(Reader1.lookup)

    def _group_reader(self) -> Any:
        if self._groups_read is None:
            self._groups_read = self.checked_reader("groups")
        return self._groups_read

    def meta(self) -> Any:
        off, _ = self._file_sections["meta"]
        return parse(schema.Meta1, self.section_bytes("meta"), "meta", off)

    def close(self) -> None:
        self._chunks, self._sparse = {}, {}
        super().close()


def decode_rows(block: bytes, m: int, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a LUT chunk of ``m`` entries, without decoding the
    chunk (a random read needs one row of 1024).

    Byte-planar columns laid one after another make the chunk's columns a
    ``(LUT2_ROW, m)`` byte matrix: byte ``q`` of row ``j``'s record is at
    ``[q, j]``.  A row's record is therefore one gather of a column of that
    matrix, and its record offsets are the chunk's bases plus prefix sums of
    the two length columns (the only ones read whole).
    """
    head = schema.LUT_CHUNK_HEAD2
    planes = np.frombuffer(block, dtype=np.uint8, count=head + m * schema.LUT2_ROW)[head:].reshape(schema.LUT2_ROW, m)
    bases = schema.LUT_CHUNK_HEAD2_FMT.unpack_from(block, 0)
    rows = np.empty(idx.size, dtype=ROWS_DTYPE)
    _stored_bytes(rows)[:, : schema.LUT2_ROW] = planes[:, idx].T
    for field, kind in _LENGTHS.items():
        ft, at = schema.LUT2_DTYPE.fields[field][:2]
        column = np.ascontiguousarray(planes[at : at + ft.itemsize].T).view(ft).reshape(m)
        base = bases[kind == "seg"]
        # The chunk's end checked exactly, as decode_chunks does (then no
        # offset in the chunk wraps and the uint64 sums below are exact):
        # a uint64 sum of 1024 lengths below 2**53 cannot wrap; hostile
        # lengths take the exact sum of the byte planes.
        if int(column.max()) < 1 << 53:
            total = int(column.sum(dtype=np.uint64))
        else:
            total = sum(int(s) << (8 * b) for b, s in enumerate(planes[at : at + ft.itemsize].sum(axis=1).tolist()))
        if base + total >= 1 << 64:
            raise IIDFormatError(f"LUT chunk: {kind} record offsets overflow 64 bits")
        rows[f"{kind}_offset"] = [base + int(column[:j].sum(dtype=np.uint64)) for j in idx.tolist()]
    return rows


def decode_chunk(block: bytes, m: int) -> np.ndarray:
    """A LUT chunk of ``m`` entries (its block's content) as :data:`ROWS_DTYPE`
    rows: the byte-planar columns, and offsets from the chunk's bases."""
    return decode_chunks([block], m)[0]


def decode_chunks(blocks: list[bytes], m: int = schema.LUT_CHUNK2, out: np.ndarray | None = None) -> np.ndarray:
    """LUT chunks of ``m`` entries each (whole chunks, or the last one alone)
    decoded together: ``(chunks, m)`` :data:`ROWS_DTYPE` rows -- the
    byte-planar columns, and record offsets from each chunk's bases --
    written into ``out`` (contiguous) when given."""
    size = schema.LUT_CHUNK_HEAD2 + m * schema.LUT2_ROW
    nb = len(blocks)
    u8 = np.frombuffer(blocks[0] if nb == 1 else b"".join(blocks), dtype=np.uint8).reshape(nb, size)
    heads = u8[:, : schema.LUT_CHUNK_HEAD2].copy().view("<u8")  # (chunks, 2): iid_base, seg_base
    rows = np.empty((nb, m), dtype=ROWS_DTYPE) if out is None else out.reshape(nb, m)
    # A chunk's columns are a (LUT2_ROW, m) byte matrix (see decode_rows):
    # its transpose is the records, stored in one strided copy into the
    # rows' leading LUT2_ROW bytes (ROWS_DTYPE begins with LUT2_DTYPE).
    _stored_bytes(rows).reshape(nb, m, ROWS_DTYPE.itemsize)[:, :, : schema.LUT2_ROW] = \
        u8[:, schema.LUT_CHUNK_HEAD2 :].reshape(nb, schema.LUT2_ROW, m).transpose(0, 2, 1)
    for k, kind in enumerate(("iid", "seg")):
        rows[f"{kind}_offset"] = _offsets(rows[f"{kind}_length"], heads[:, k], kind)
    return rows


def _stored_bytes(rows: np.ndarray) -> np.ndarray:
    """``(rows, ROWS_DTYPE.itemsize)`` bytes of (contiguous) ``rows``: their
    first ``LUT2_ROW`` bytes are the stored record."""
    return rows.reshape(-1).view(np.uint8).reshape(-1, ROWS_DTYPE.itemsize)


#: The length columns of a LUT row, and the records they measure.
_LENGTHS = {"iid_length": "iid", "seg_length": "seg"}


def _offsets(lengths: np.ndarray, bases: np.ndarray, kind: str) -> np.ndarray:
    """``(chunks, m)`` record offsets: each chunk's base plus the lengths of
    its rows before (uint64), refused when they overflow 64 bits (a wrapped
    offset would point back into the content)."""
    lens = lengths.astype(np.uint64)
    offs = np.empty(lens.shape, dtype=np.uint64)
    offs[:, 0] = bases
    np.cumsum(lens[:, :-1], axis=1, out=offs[:, 1:])
    offs[:, 1:] += bases[:, None]
    last = offs[:, -1] + lens[:, -1]
    if (offs[:, -1] < bases).any() or (offs[:, 1:] < offs[:, :-1]).any() or (last < offs[:, -1]).any():
        raise IIDFormatError(f"LUT chunk: {kind} record offsets overflow 64 bits")
    return offs


def bboxes_of(rows: np.ndarray) -> np.ndarray:
    """``(n, 4)`` int64 bboxes (minr, minc, maxr, maxc) of decoded LUT rows,
    which store each as a corner and a size."""
    minr = rows["minr"].astype(np.int64)
    minc = rows["minc"].astype(np.int64)
    return np.stack([minr, minc, minr + rows["height"], minc + rows["width"]], axis=1)


def segment_rows(rows: np.ndarray, rel: np.ndarray, lens: np.ndarray) -> tuple:
    """The bulk walk's columns (:func:`iidschema.bulk.segment_table`) of
    version-2 segments: each one region over its bbox (none when the bbox is
    empty), straight from the LUT rows; ``bad`` marks rows the one-record
    parser must report."""
    boxes = bboxes_of(rows)
    has = (rows["height"] > 0) & (rows["width"] > 0)
    bad = (~has & (lens != 0)) | (boxes[:, 2] > schema.MAX_COORD_V1) | (boxes[:, 3] > schema.MAX_COORD_V1)
    rseg = np.flatnonzero(has)
    table = (rseg, boxes[rseg], rows["codec"].astype(np.int64)[rseg], rel[rseg], lens[rseg])
    return boxes, rows["area"].astype(np.int64), table, bad


def check_bulk_size(lens: np.ndarray, limit: int) -> None:
    """Refuse a bulk read of records whose content exceeds ``limit`` bytes
    before it is decompressed (:class:`IIDLimitError`)."""
    total = int(lens.sum())
    if total > limit:
        raise IIDLimitError(f"these records hold {total} bytes once decompressed, above the limit of {limit} "
                            "(iidschema.masks.MAX_MASK_PIXELS); read fewer keys at once, or raise the limit if you trust this file")
