"""Lazy readers, one per format version, behind one interface.

:func:`open_reader` parses the header only (the ``version`` field dispatches
through :data:`iidschema.schema.Header`) and checks that every section lies
inside the file, in order and without overlap.  Everything else (LUT rows,
IID records, segments, groups, metadata) is read and checked when first
asked for, so opening a file costs the same at a thousand entries as at a
million, and a fetch touches only the bytes it needs.

Every check that can fail on a bad file raises :class:`IIDFormatError` with
the section and absolute byte offset; lengths are compared with the file
size before anything is read or allocated.
"""

from __future__ import annotations

import functools
import io
from typing import Any, Iterator

import numpy as np
from construct import ConstructError, StreamError

from . import schema
from .errors import IIDChecksumError, IIDFormatError, IIDVersionError
from .model import IID, Region, Regions, Segment
from .source import ByteSource

__all__ = ["Reader", "Reader0", "open_reader", "SourceStream"]


class SourceStream(io.RawIOBase):
    """A seekable read-only stream over a :class:`ByteSource`.

    Lets construct's ``parse_stream`` work directly on the source (no copy
    of the file into a ``BytesIO``): reads beyond the end come back short,
    which construct reports as a stream error that we translate.
    """

    def __init__(self, source: ByteSource, pos: int = 0):
        self.source = source
        self.pos = pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.source.size}[whence]
        self.pos = base + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.source.size - self.pos
        n = max(0, min(n, self.source.size - self.pos))
        data = bytes(self.source.read(self.pos, n)) if n else b""
        self.pos += n
        return data


def parse(con, data: Any, section: str, offset: int, **params: Any) -> Any:
    """Parse ``data`` (bytes or a :class:`SourceStream`) with a declaration,
    turning construct's errors into :class:`IIDFormatError`."""
    try:
        if isinstance(data, SourceStream):
            return con.parse_stream(data, **params)
        return con.parse(bytes(data), **params)
    except IIDFormatError as exc:
        if exc.section is None:
            raise IIDFormatError(exc.message, section=section, offset=offset if exc.offset is None else offset + exc.offset) from None
        raise
    except StreamError:
        raise IIDFormatError(f"{section} is truncated", section=section, offset=offset) from None
    except ConstructError as exc:
        raise IIDFormatError(f"cannot parse {section}: {type(exc).__name__}", section=section, offset=offset) from None


class Reader:
    """What :class:`~iidschema.IIDFile` needs from a file, for any version."""

    version: int
    rformat: int
    count: int
    source: ByteSource

    def sections(self) -> dict[str, tuple[int, int]]:  # pragma: no cover - interface
        raise NotImplementedError

    # Records are located (and their LUT rows checked) for many keys at once,
    # then parsed one by one straight from the zero-copy file buffer when the
    # source has one.  ``iid()``/``segment()`` are the one-key case of the
    # same path, so there is one parser per record layout.

    def _locate(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, list]:  # pragma: no cover
        """Absolute offsets and lengths of the ``kind`` ("iid"/"seg") records of
        ``keys``, checked, and per key what the LUT row says about the record
        (version 1: CRC, and for segments bbox and area; version 0: None)."""
        raise NotImplementedError

    def _parse_segment(self, data: Any, length: int, key: int, at: int, info: Any) -> Segment:  # pragma: no cover
        raise NotImplementedError

    def _verify(self, data: Any, key: int, kind: str, at: int, info: Any) -> None:
        """Check a record's integrity (version 1: its CRC); version 0 has none."""

    def _records(self, keys: Any, kind: str, section: str) -> Iterator[tuple[int, Any, int, int, Any]]:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        offs, lens, infos = self._locate(keys, kind)
        buf = self.source.buffer()
        for key, off, n, info in zip(keys.tolist(), offs.tolist(), lens.tolist(), infos):
            data = buf[off : off + n] if buf is not None else self.source.read(off, n, section)
            self._verify(data, key, kind, off, info)
            yield key, data, n, off, info

    def iids(self, keys: Any) -> list[IID]:
        """The IIDs of ``keys``, in that order."""
        return [_parse_iid(data, n, key, at) for key, data, n, at, _ in self._records(keys, "iid", "iids")]

    def segments(self, keys: Any) -> list[Segment]:
        """The segments of ``keys`` (masks not decoded yet), in that order."""
        return [self._parse_segment(data, n, key, at, info) for key, data, n, at, info in self._records(keys, "seg", "segs")]

    def iid(self, key: int) -> IID:
        return self.iids([self._check_key(key)])[0]

    def segment(self, key: int) -> Segment:
        return self.segments([self._check_key(key)])[0]

    def _check_key(self, key: int) -> int:
        if not 0 <= key < self.count:
            raise KeyError(f"key {key} out of range (file has {self.count} entries)")
        return key

    def _check_keys(self, keys: np.ndarray) -> None:
        """``KeyError`` naming the first key of ``keys`` out of range."""
        if keys.size and (int(keys.min()) < 0 or int(keys.max()) >= self.count):
            self._check_key(int(keys.min()) if int(keys.min()) < 0 else int(keys.max()))

    def heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """Segment bboxes ``(n, 4)`` and areas ``(n,)`` of ``keys`` (int64)."""
        raise NotImplementedError

    # -- groups (the same layout in every version) ---------------------------
    #
    # The group table (a length prefix and a small JSON list) is read and
    # checked on its own; each group's keys are read only when asked for, so
    # finding one small group costs the table plus that group's keys, not the
    # whole section (which holds every key of every group).

    #: name -> (absolute offset of the group's keys, number of keys), table order.
    _group_heads: "dict[str, tuple[int, int]] | None" = None

    def _group_reader(self) -> Any:  # pragma: no cover - interface
        """A ``read(offset, length)`` over the groups section, with the
        integrity checks of the version."""
        raise NotImplementedError

    def group_table(self) -> dict[str, tuple[int, int]]:
        """Every group's name -> (absolute offset of its keys, number of keys),
        in table order.  Reads and checks the table only, never the keys."""
        if self._group_heads is None:
            off, length = self._sections["groups"]  # type: ignore[attr-defined]
            self._group_heads = _group_table(self._group_reader(), off, length)
        return self._group_heads

    def group_keys(self, name: str) -> np.ndarray:
        """The keys of group ``name`` as stored (int64, each checked to be
        below the entry count); reads only those keys.  ``KeyError`` for an
        unknown name."""
        at, n = self.group_table()[name]
        return _group_keys(self._group_reader(), at, n, name, self.count)

    def groups(self) -> dict[str, np.ndarray]:
        """Every group (all keys read and checked), in table order."""
        return {name: self.group_keys(name) for name in self.group_table()}

    def meta(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    #: Every entry's bbox, read once for readers without a spatial index.
    _boxes: np.ndarray | None = None

    def candidates(self, bbox: tuple[int, int, int, int]) -> np.ndarray:
        """Keys whose segment bbox intersects ``bbox`` (ascending).

        Without an index this scans every bbox; they are read once and kept
        (16 bytes per entry), so repeated queries cost a numpy pass only."""
        keys = np.arange(self.count, dtype=np.int64)
        if self._boxes is None:
            self._boxes = self.heads(keys)[0]
        boxes = self._boxes
        minr, minc, maxr, maxc = bbox
        hit = (boxes[:, 0] < maxr) & (minr < boxes[:, 2]) & (boxes[:, 1] < maxc) & (minc < boxes[:, 3])
        return keys[hit]

    def lookup(self, addresses: list[bytes]) -> np.ndarray | None:
        """Candidate keys for ``addresses`` from an address index, or None
        when the file has none (callers then scan)."""
        return None

    def close(self) -> None:
        """Drop the views of the file and close the source; later reads raise ``ValueError``."""
        self._lut = None
        self._boxes = None
        self.source.close()

    def _lut_rows(self, keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """LUT rows of ``keys``: from the zero-copy view when the source has a
        buffer, else by reading just those rows (a remote or counted source
        must not transfer the whole table for a few keys)."""
        if self.source.buffer() is not None:
            return self.lut[keys]
        off, _ = self._sections["lut"]
        raw = self.source.gather(off + keys * dtype.itemsize, dtype.itemsize, "lut")
        return raw.view(dtype).reshape(-1)


class Reader0(Reader):
    """Version 0, as written by iidfile 0.2.0."""

    SECTIONS = ("lut", "iids", "meta", "groups", "segs")

    def __init__(self, source: ByteSource, header: Any):
        self.source = source
        self.version = header.version
        self.rformat = header.rformat
        self._sections = {name: (header[name].offset, header[name].length) for name in self.SECTIONS}
        self._check_sections()
        lut_off, lut_len = self._sections["lut"]
        if lut_len % schema.LUT0_ROW:
            raise IIDFormatError(
                f"LUT length {lut_len} is not a multiple of {schema.LUT0_ROW}", section="lut", offset=lut_off
            )
        self.count = lut_len // schema.LUT0_ROW
        self._lut: np.ndarray | None = None

    # -- layout -------------------------------------------------------------

    def _check_sections(self) -> None:
        end = schema.HEADER0_SIZE
        for name in self.SECTIONS:
            off, length = self._sections[name]
            self.source.check(off, length, name)
            if off < end:
                raise IIDFormatError(
                    f"section starts at {off}, inside the previous section or the header (which end at {end}); "
                    "sections must follow the order lut, iids, meta, groups, segs without overlapping",
                    section=name,
                    offset=off,
                )
            end = off + length

    def sections(self) -> dict[str, tuple[int, int]]:
        return dict(self._sections)

    # -- LUT ----------------------------------------------------------------

    @property
    def lut(self) -> np.ndarray:
        """The lookup table as a read-only numpy structured view (no copy on mmap)."""
        if self._lut is None:
            off, _ = self._sections["lut"]
            table = schema.StructArray(self.count, schema.LutEntry0)
            self._lut = parse(table, SourceStream(self.source, off), "lut", off, buffer=self.source.buffer())
        return self._lut

    def _locate(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
        section = "iids" if kind == "iid" else "segs"
        if keys.size and (int(keys.min()) < 0 or int(keys.max()) >= self.count):
            self._check_key(int(keys.min()) if int(keys.min()) < 0 else int(keys.max()))
        rows = self._lut_rows(keys, schema.LUT0_DTYPE)
        rel = rows[kind]["offset"].astype(np.int64)
        length = rows[kind]["length"].astype(np.int64)
        base, size = self._sections[section]
        bad = (rows["key"] != keys) | (rel + length > size)
        if bad.any():
            i = int(np.argmax(bad))
            key, at = int(keys[i]), self._sections["lut"][0] + int(keys[i]) * schema.LUT0_ROW
            if int(rows["key"][i]) != key:
                raise IIDFormatError(f"LUT row {key} holds key {int(rows['key'][i])}", section="lut", offset=at)
            raise IIDFormatError(
                f"LUT row {key}: {kind} record [{int(rel[i])}, {int(rel[i] + length[i])}) lies outside the "
                f"{section} section ({size} bytes)",
                section="lut",
                offset=at,
            )
        return base + rel, length, [None] * keys.size

    def _locate_rows(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, None]:
        offs, lens, _ = self._locate(keys, kind)
        return offs, lens, None

    def _info(self, rows: Any, i: int) -> None:
        return None

    def _verify_bulk(self, offs: np.ndarray, lens: np.ndarray, rows: Any, keys: np.ndarray, kind: str,
                     raw: Any = None, rel: Any = None) -> None:
        """Version 0 has no checksums."""

    def _parse_segment(self, data: Any, length: int, key: int, off: int, info: Any) -> Segment:
        head, rhead = schema.SEG_HEAD0, schema.REGION_HEAD0
        if length < head.size:
            raise IIDFormatError(f"segment of key {key} is {length} bytes, shorter than its head", section="segs", offset=off)
        k, minr, minc, maxr, maxc, area = head.unpack_from(data, 0)
        if k != key:
            raise IIDFormatError(f"segment holds key {k}, LUT says {key}", section="segs", offset=off)
        if maxr < minr or maxc < minc:
            raise IIDFormatError(f"segment {key} has an inverted bbox {(minr, minc, maxr, maxc)}", section="segs", offset=off)
        regions = Regions()
        p, end = head.size, length
        while p < end:
            at = off + p
            if end - p < rhead.size:
                raise IIDFormatError(f"segment {key}: truncated region head", section="segs", offset=at)
            rlen, a, b, c, d = rhead.unpack_from(data, p)
            if not (minr <= a < c <= maxr and minc <= b < d <= maxc):
                raise IIDFormatError(
                    f"segment {key}: region bbox {(a, b, c, d)} is empty or outside the segment bbox {(minr, minc, maxr, maxc)}",
                    section="segs",
                    offset=at,
                )
            if rlen != rhead.size + ((c - a) * (d - b) + 7) // 8 or p + rlen > end:
                raise IIDFormatError(
                    f"segment {key}: region length {rlen} does not match its bbox or overruns the segment",
                    section="segs",
                    offset=at,
                )
            regions.append(Region.raw((a, b, c, d), 0, bytes(data[p + rhead.size : p + rlen])))
            p += rlen
        return Segment(key, (minr, minc, maxr, maxc), area, regions)

    def heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
        rows = self._lut_rows(keys, schema.LUT0_DTYPE)
        base, size = self._sections["segs"]
        rel = rows["seg"]["offset"].astype(np.int64)
        length = rows["seg"]["length"].astype(np.int64)
        bad = (rows["key"] != keys) | (length < schema.SEG_HEAD0.size) | (rel + length > size)
        if bad.any():
            # Report the first bad row precisely through the shared locator.
            self._locate(keys[np.argmax(bad) : np.argmax(bad) + 1], "seg")
            k = int(keys[np.argmax(bad)])
            raise IIDFormatError(f"segment of key {k} is shorter than its head", section="segs", offset=base + int(rel[np.argmax(bad)]))
        raw = self.source.gather(base + rel, schema.SEG_HEAD0.size, "segs")
        heads = raw.view(schema.SEG_HEAD0_DTYPE).reshape(-1)
        if (heads["key"] != keys).any():
            i = int(np.argmax(heads["key"] != keys))
            raise IIDFormatError(f"segment holds key {int(heads['key'][i])}, LUT says {int(keys[i])}", section="segs", offset=base + int(rel[i]))
        bb = heads["bbox"]
        boxes = np.stack([bb["minr"], bb["minc"], bb["maxr"], bb["maxc"]], axis=1).astype(np.int64)
        return boxes, heads["area"].astype(np.int64)

    # -- groups and meta ----------------------------------------------------

    def _group_reader(self) -> Any:
        return lambda o, n: self.source.read(o, n, "groups")  # version 0 has no checksums

    def meta(self) -> Any:
        off, length = self._sections["meta"]
        return parse(schema.Meta0, self.source.read(off, length, "meta"), "meta", off)


def _group_table(read: Any, off: int, length: int) -> dict[str, tuple[int, int]]:
    """The group table of a groups section at ``off`` (``length`` bytes), read
    through ``read(offset, length)`` and checked: name -> (absolute offset of
    the group's keys, number of keys).  Every length is checked against the
    section before anything is read, and every group's key list must lie in
    the group data, so that reading one group later needs no further check
    but its keys' values."""
    prefix = schema.GROUP_TABLE_LEN0
    if length < prefix.size:
        raise IIDFormatError(
            f"groups section is {length} bytes, shorter than its {prefix.size}-byte table length", section="groups", offset=off
        )
    (json_len,) = prefix.unpack(read(off, prefix.size))
    if json_len > length - prefix.size:
        raise IIDFormatError(
            f"group table length {json_len} runs past the end of the {length}-byte groups section", section="groups", offset=off
        )
    table = parse(schema.GroupTable0, read(off + prefix.size, json_len), "groups", off + prefix.size)
    if not isinstance(table, list):
        raise IIDFormatError("group table is not a JSON list", section="groups", offset=off + prefix.size)
    data_off = off + prefix.size + json_len
    data_len = length - prefix.size - json_len
    key_size = schema.GROUP_KEY0_DTYPE.itemsize
    out: dict[str, tuple[int, int]] = {}
    for item in table:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and all(type(item.get(f)) is int and item[f] >= 0 for f in ("offset", "length"))
        ):
            raise IIDFormatError(f"malformed group table item {_short_repr(item)}", section="groups", offset=off + prefix.size)
        name, g_off, g_len = item["name"], item["offset"], item["length"]
        if name in out:
            raise IIDFormatError(f"group {name!r} is listed twice", section="groups", offset=off + prefix.size)
        if g_len % key_size or g_off + g_len > data_len:
            raise IIDFormatError(
                f"group {name!r}: keys [{g_off}, {g_off + g_len}) do not fit the group data ({data_len} bytes)",
                section="groups",
                offset=data_off + min(g_off, data_len),
            )
        out[name] = (data_off + g_off, g_len // key_size)
    return out


def _group_keys(read: Any, at: int, n: int, name: str, count: int) -> np.ndarray:
    """The ``n`` keys of group ``name`` at absolute offset ``at`` (located by
    :func:`_group_table`), as int64, each checked to be below ``count``."""
    dtype = schema.GROUP_KEY0_DTYPE
    if n == 0:
        return np.zeros(0, np.int64)
    keys = np.frombuffer(read(at, n * dtype.itemsize), dtype=dtype).astype(np.int64)
    if int(keys.max()) >= count:
        raise IIDFormatError(f"group {name!r} holds key {int(keys.max())}, file has {count} entries", section="groups", offset=at)
    return keys


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_iid(data: Any, length: int, key: int, off: int) -> IID:
    """An IID record (same layout in versions 0 and 1)."""
    head = schema.IID_HEAD0
    if length < head.size:
        raise IIDFormatError(f"IID record of key {key} is {length} bytes, shorter than its head", section="iids", offset=off)
    k, dlen, alen = head.unpack_from(data, 0)
    if k != key:
        raise IIDFormatError(f"IID record holds key {k}, LUT says {key}", section="iids", offset=off)
    if head.size + dlen + alen != length:
        raise IIDFormatError(
            f"IID record of key {key}: lengths {dlen} + {alen} do not fill its {length} bytes", section="iids", offset=off
        )
    start = head.size
    return IID(address=bytes(data[start + dlen : length]), domain=bytes(data[start : start + dlen]), key=key)


def crc32c(data: Any) -> int:
    """CRC32C (Castagnoli) of ``data``, the checksum of format version 1."""
    import crc32c as _crc

    return _crc.crc32c(data)


class Reader1(Reader):
    """Version 1: section table, checksums, codec ids, indexes.

    Checks are made where data is read, so damage in one part of a file is
    reported when (and only when) that part is used, and the rest stays
    readable: the header and its section table at open; LUT rows by blocks
    of :data:`schema.LUT_BLOCK`; each IID and segment record by its own CRC;
    metadata as a whole on first use; groups and index sections by the
    4 KiB blocks a read touches when ``block_crcs`` has a table for them,
    else as a whole on first use.
    """

    def __init__(self, source: ByteSource, header: Any):
        self.source = source
        self.version = header.version
        self.rformat = header.rformat
        self.count = header.entry_count
        self._sections, self._crcs, self._unknown = _section_table(source, header)
        lut_off, lut_len = self._sections["lut"]
        if lut_len != schema.lut1_size(self.count):
            raise IIDFormatError(
                f"LUT is {lut_len} bytes, {self.count} entries need {schema.lut1_size(self.count)}", section="lut", offset=lut_off
            )
        self._lut: np.ndarray | None = None
        self._row_cache: dict[int, np.ndarray] = {}
        self._verified_blocks = np.zeros((self.count + schema.LUT_BLOCK - 1) // schema.LUT_BLOCK, dtype=bool)
        self._verified_sections: set[str] = set()
        self._groups_read: Any = None
        self._spatial: Any = None
        self._address: Any = None
        self._blocks: dict[str, Any] | None = None
        self._check_codecs()

    # -- layout and checksums ----------------------------------------------

    def sections(self) -> dict[str, tuple[int, int]]:
        return dict(self._sections)

    def unknown_sections(self) -> list[tuple[int, int, int]]:
        """(id, offset, length) of optional sections this reader skipped."""
        return list(self._unknown)

    def section_bytes(self, name: str) -> memoryview:
        """The bytes of section ``name``, checked against its CRC on first use."""
        off, length = self._sections[name]
        data = self.source.read(off, length, name)
        if name not in self._verified_sections:
            if crc32c(data) != self._crcs[name]:
                raise IIDChecksumError(f"section {name!r} is damaged (checksum mismatch)", section=name, offset=off)
            self._verified_sections.add(name)
        return data

    def _block_table(self, name: str) -> Any:
        """The block CRC table of section ``name`` (or None), from ``block_crcs``."""
        if self._blocks is None:
            # Kept only when the whole section is sound: a damaged or
            # malformed block_crcs is reported by every use, not just the first.
            blocks = {}
            if "block_crcs" in self._sections:
                off, _ = self._sections["block_crcs"]
                parsed = parse(schema.BlockCrcs1, self.section_bytes("block_crcs"), "block_crcs", off)
                for table in parsed.tables:
                    sec = schema.SectionId.NAMES.get(table.section_id)
                    if sec in self._sections:
                        size = self._sections[sec][1]
                        if table.block_size == 0 or table.count != (size + table.block_size - 1) // table.block_size:
                            raise IIDFormatError(f"block CRC table of {sec!r} does not match its size", section="block_crcs", offset=off)
                        blocks[sec] = (table.block_size, np.array(table.crcs), np.zeros(table.count, dtype=bool))
            self._blocks = blocks
        return self._blocks.get(name)

    def checked_reader(self, name: str) -> Any:
        """A ``read(offset, length)`` over section ``name`` that verifies, on
        first use, only the checksum blocks it touches (or the whole section
        when the file has no block table for it)."""
        base, size = self._sections[name]
        table = self._block_table(name)
        if table is None:
            self.section_bytes(name)
            return lambda o, n: self.source.read(o, n, name)
        block, crcs, verified = table

        def read(o: int, n: int) -> memoryview:
            self.source.check(o, n, name)
            if o < base or o + n > base + size:
                raise IIDFormatError(f"read [{o}, {o + n}) outside section {name!r}", section=name, offset=o)
            first, last = (o - base) // block, (o + n - 1 - base) // block if n else (o - base) // block - 1
            for b in range(first, last + 1):
                if not verified[b]:
                    start = base + b * block
                    chunk = self.source.read(start, min(block, base + size - start), name)
                    if crc32c(chunk) != int(crcs[b]):
                        raise IIDChecksumError(f"section {name!r} is damaged (block {b} checksum mismatch)", section=name, offset=start)
                    verified[b] = True
            return self.source.read(o, n, name)

        return read

    @functools.cached_property
    def _codec_ids(self) -> list[int] | None:
        if "codecs" not in self.sections():
            return None
        return list(parse(schema.Codecs1, self.section_bytes("codecs"), "codecs", self.sections()["codecs"][0]).ids)

    def codec_ids(self) -> list[int] | None:
        """The codec ids the ``codecs`` section lists (None: no such
        section), parsed once."""
        return self._codec_ids

    def _check_codecs(self) -> None:
        from .codecs import get_codec

        for codec_id in self._codec_ids or ():
            get_codec(codec_id)  # raises IIDCodecError naming the id

    # -- LUT ----------------------------------------------------------------

    @property
    def lut(self) -> np.ndarray:
        """The LUT rows as a read-only numpy structured view (no copy on mmap).

        Rows are not checksum-verified by this property; the reader's own
        accessors verify the blocks they use."""
        if self._lut is None:
            off, _ = self._sections["lut"]
            table = schema.StructArray(self.count, schema.LutEntry1)
            self._lut = parse(table, SourceStream(self.source, off), "lut", off, buffer=self.source.buffer())
        return self._lut

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """LUT rows of ``keys``, their blocks verified (each block once).

        Blocks are read on their own, so a remote or counted source transfers
        only the blocks of the keys asked for, never the whole table."""
        self.source.ensure_open()
        block = schema.LUT_BLOCK
        row = schema.LUT1_ROW
        off, _ = self._sections["lut"]
        crc_at = off + self.count * row
        blocks = np.unique(keys // block)
        for b in blocks[~self._verified_blocks[blocks]].tolist():
            lo, hi = b * block, min(self.count, (b + 1) * block)
            data = self.source.read(off + lo * row, (hi - lo) * row, "lut")
            expected = int.from_bytes(self.source.read(crc_at + 4 * b, 4, "lut"), "little")
            if crc32c(data) != expected:
                raise IIDChecksumError(
                    f"LUT rows {lo}..{hi - 1} are damaged (block checksum mismatch)", section="lut", offset=off + lo * row
                )
            self._verified_blocks[b] = True
            if self.source.buffer() is None:
                self._row_cache[b] = np.frombuffer(bytes(data), dtype=schema.LUT1_DTYPE)
        if self.source.buffer() is not None:
            return self.lut[keys]
        rows = np.empty(keys.size, dtype=schema.LUT1_DTYPE)
        which = keys // block
        for b in blocks.tolist():
            sel = which == b
            rows[sel] = self._row_cache[b][keys[sel] - b * block]
        return rows

    def _locate_rows(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        section = "iids" if kind == "iid" else "segs"
        self._check_keys(keys)
        rows = self._rows(keys)
        rel = rows[kind]["offset"]
        length = rows[kind]["length"]
        base, size = self._sections[section]
        bad = outside(rel, length, size)
        if bad.any():
            i = int(np.argmax(bad))
            at = self._sections["lut"][0] + int(keys[i]) * schema.LUT1_ROW
            raise IIDFormatError(
                f"LUT row {int(keys[i])}: {kind} record [{int(rel[i])}, {int(rel[i]) + int(length[i])}) lies outside the "
                f"{section} section ({size} bytes)",
                section="lut",
                offset=at,
            )
        return base + rel.astype(np.int64), length.astype(np.int64), rows

    def _locate(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, list]:
        offs, lens, rows = self._locate_rows(keys, kind)
        crcs = rows[f"{kind}_crc"].tolist()
        if kind == "iid":
            infos: list = crcs
        else:
            bb = rows["bbox"]
            infos = list(zip(crcs, bb["minr"].tolist(), bb["minc"].tolist(), bb["maxr"].tolist(), bb["maxc"].tolist(),
                             rows["area"].tolist()))
        return offs, lens, infos

    def _info(self, rows: np.ndarray, i: int) -> Any:
        row = rows[i]
        b = row["bbox"]
        return (int(row["seg_crc"]), int(b["minr"]), int(b["minc"]), int(b["maxr"]), int(b["maxc"]), int(row["area"]))

    def _verify_bulk(self, offs: np.ndarray, lens: np.ndarray, rows: np.ndarray, keys: np.ndarray, kind: str,
                     raw: Any = None, rel: Any = None) -> None:
        """Check the CRCs of many records, whose bytes are ``raw`` (record
        ``i`` at ``rel[i]``) when given: of the whole section once when they
        cover a good part of it (one pass over contiguous bytes; none more
        when ``raw`` is the whole section), else record by record."""
        section = "iids" if kind == "iid" else "segs"
        base, size = self._sections[section]
        if section in self._verified_sections:
            return
        if 4 * int(lens.sum()) >= size:
            whole = raw is not None and len(raw) == size and offs.size and int(offs.min()) == base
            if whole and crc32c(raw) == self._crcs[section]:
                self._verified_sections.add(section)
                return
            if not whole:
                try:
                    self.section_bytes(section)
                    return
                except IIDChecksumError:
                    pass  # damage somewhere in the section: it matters only if it is in one of these records
        crcs = rows[f"{kind}_crc"].tolist()
        view = memoryview(raw) if raw is not None else None
        for i, (off, n) in enumerate(zip(offs.tolist(), lens.tolist())):
            data = view[int(rel[i]) : int(rel[i]) + n] if view is not None else self.source.read(off, n, section)
            self._verify(data, int(keys[i]), kind, off, crcs[i] if kind == "iid" else (crcs[i],))

    def _verify(self, data: Any, key: int, kind: str, at: int, info: Any) -> None:
        expected = info if kind == "iid" else info[0]
        if crc32c(data) != expected:
            what = "IID" if kind == "iid" else "segment"
            raise IIDChecksumError(f"{what} record of entry {key} is damaged (checksum mismatch)",
                                   section="iids" if kind == "iid" else "segs", offset=at)

    def _parse_segment(self, data: Any, length: int, key: int, off: int, info: Any) -> Segment:
        _, minr, minc, maxr, maxc, area = info
        if maxr < minr or maxc < minc:
            at = self._sections["lut"][0] + key * schema.LUT1_ROW
            raise IIDFormatError(f"entry {key} has an inverted bbox {(minr, minc, maxr, maxc)}", section="lut", offset=at)
        head, rhead = schema.SEG_HEAD1, schema.REGION_HEAD1
        if length < head.size:
            raise IIDFormatError(f"segment of key {key} is shorter than its head", section="segs", offset=off)
        k, nreg = head.unpack_from(data, 0)
        if k != key:
            raise IIDFormatError(f"segment holds key {k}, LUT says {key}", section="segs", offset=off)
        if nreg > (length - head.size) // rhead.size:
            raise IIDFormatError(f"segment {key} claims {nreg} regions, more than its {length} bytes hold", section="segs", offset=off)
        regions = Regions()
        p, end = head.size, length
        for _ in range(nreg):
            at = off + p
            if end - p < rhead.size:
                raise IIDFormatError(f"segment {key}: truncated region head", section="segs", offset=at)
            a, bb, c, d, codec, _flags, plen = rhead.unpack_from(data, p)
            if not (minr <= a < c <= maxr and minc <= bb < d <= maxc):
                raise IIDFormatError(
                    f"segment {key}: region bbox {(a, bb, c, d)} is empty or outside the segment bbox {(minr, minc, maxr, maxc)}",
                    section="segs",
                    offset=at,
                )
            p += rhead.size
            if plen > end - p:
                raise IIDFormatError(f"segment {key}: region payload of {plen} bytes overruns the segment", section="segs", offset=at)
            regions.append(Region.raw((a, bb, c, d), codec, bytes(data[p : p + plen])))
            p += plen
        if p != end:
            raise IIDFormatError(f"segment {key}: {end - p} bytes after its last region", section="segs", offset=off + p)
        # A version-1 writer may store several components as one region.
        return Segment(key, (minr, minc, maxr, maxc), area, regions, components=False)

    def heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
        rows = self._rows(keys)
        b = rows["bbox"]
        boxes = np.stack([b["minr"], b["minc"], b["maxr"], b["maxc"]], axis=1).astype(np.int64)
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            i = int(np.argmax((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])))
            at = self._sections["lut"][0] + int(keys[i]) * schema.LUT1_ROW
            raise IIDFormatError(f"entry {int(keys[i])} has an inverted bbox", section="lut", offset=at)
        return boxes, rows["area"].astype(np.int64)

    # -- groups, meta -------------------------------------------------------

    def _group_reader(self) -> Any:
        # Verifies the 4 KiB blocks it touches (files with a block CRC table
        # for groups), else the whole section once (files written before it).
        if self._groups_read is None:
            try:
                self._groups_read = self.checked_reader("groups")
            except IIDFormatError as exc:
                if exc.section != "block_crcs":
                    raise
                # A damaged block_crcs section (reported when the indexes use
                # it) must not make the groups unreadable: they have their own
                # section CRC, which verifies them as a whole.
                self.section_bytes("groups")
                self._groups_read = lambda o, n: self.source.read(o, n, "groups")
        return self._groups_read

    def meta(self) -> Any:
        off, _ = self._sections["meta"]
        return parse(schema.Meta1, self.section_bytes("meta"), "meta", off)

    # -- indexes ------------------------------------------------------------

    def _index(self, name: str, cls: Any) -> Any:
        off, length = self._sections[name]
        return cls(self.checked_reader(name), off, length)

    def candidates(self, bbox: tuple[int, int, int, int]) -> np.ndarray:
        if "spatial_index" not in self._sections:
            return super().candidates(bbox)
        if self._spatial is None:
            from .index.spatial import SpatialIndex

            self._spatial = self._index("spatial_index", SpatialIndex)
        keys = np.asarray(self._spatial.search(bbox), dtype=np.int64)
        if keys.size and int(keys.max()) >= self.count:
            raise IIDFormatError("spatial index refers to a key past the entry count", section="spatial_index",
                                 offset=self._sections["spatial_index"][0])
        return keys

    def lookup(self, addresses: list[bytes]) -> np.ndarray | None:
        if "address_index" not in self._sections:
            return None
        if self._address is None:
            from .index.address import AddressIndex

            self._address = self._index("address_index", AddressIndex)
        found = [np.asarray(k, dtype=np.int64) for k in self._address.lookup_many(addresses)]
        keys = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        if keys.size and int(keys.max()) >= self.count:
            raise IIDFormatError("address index refers to a key past the entry count", section="address_index",
                                 offset=self._sections["address_index"][0])
        return keys


def outside(rel: np.ndarray, length: np.ndarray, size: int) -> np.ndarray:
    """Which records ``[rel, rel + length)`` (uint64) do not lie in a section
    of ``size`` bytes: compared without overflow (uint64 arithmetic cannot go
    negative, and ``rel + length`` could wrap)."""
    size = np.uint64(size)
    return (rel > size) | (length > size - np.minimum(rel, size))


def _section_table(source: ByteSource, header: Any) -> tuple[dict[str, tuple[int, int]], dict[str, int], list[tuple[int, int, int]]]:
    """The section table of a version-1 or -2 header, checked: the header
    CRC, every section inside the file and after the header, no overlaps,
    no unknown *required* section, every mandatory section present.
    Returns name -> (offset, length), name -> CRC, and the unknown optional
    sections as (id, offset, length)."""
    hsize = schema.header1_size(header.section_count)
    raw = source.read(0, hsize, "header")
    if crc32c(raw[: hsize - 4]) != header.header_crc:
        raise IIDChecksumError("header checksum mismatch: the header or its section table is damaged", section="header", offset=hsize - 4)
    sections: dict[str, tuple[int, int]] = {}
    crcs: dict[str, int] = {}
    unknown: list[tuple[int, int, int]] = []
    spans = []
    for i, sec in enumerate(header.sections):
        at = schema.HEADER1_FIXED_SIZE + i * schema.SectionEntry1.sizeof()
        name = schema.SectionId.NAMES.get(sec.id)
        if header.version >= 2 and sec.id == schema.SectionId.BLOCK_CRCS:
            name = None  # version 2 checks every blocked section per block instead
        source.check(sec.offset, sec.length, name or f"section {sec.id}")
        if sec.offset < hsize:
            raise IIDFormatError(f"section id {sec.id} starts inside the header", section="header", offset=at)
        spans.append((sec.offset, sec.length, sec.id))
        if name is None:
            if sec.flags & schema.SECTION_REQUIRED:
                raise IIDFormatError(
                    f"section id {sec.id} is marked required but this reader does not know it; upgrade iidschema",
                    section="header",
                    offset=at,
                )
            unknown.append((sec.id, sec.offset, sec.length))
            continue
        if name in sections:
            raise IIDFormatError(f"section {name!r} is listed twice", section="header", offset=at)
        sections[name] = (sec.offset, sec.length)
        crcs[name] = sec.crc
    spans.sort()
    for (o1, n1, id1), (o2, _, id2) in zip(spans, spans[1:]):
        if o1 + n1 > o2:
            raise IIDFormatError(f"sections {id1} and {id2} overlap", section="header", offset=o2)
    missing = [schema.SectionId.NAMES[i] for i in schema.SectionId.MANDATORY if schema.SectionId.NAMES[i] not in sections]
    if missing:
        raise IIDFormatError(f"mandatory sections missing: {', '.join(missing)}", section="header", offset=schema.HEADER1_FIXED_SIZE)
    return sections, crcs, unknown


def open_reader(source: ByteSource) -> Reader:
    """Parse the header of ``source`` and return the reader of its version."""
    if source.size < 4:
        raise IIDFormatError(f"file is {source.size} bytes, too short for a header", section="header", offset=0)
    header = parse(schema.Header, SourceStream(source, 0), "header", 0)
    from .reader2 import Reader2

    readers = {0: Reader0, 1: Reader1, 2: Reader2}
    if header.version not in readers:  # pragma: no cover - schema raises first
        raise IIDVersionError(header.version, tuple(readers))
    return readers[header.version](source, header.body)
