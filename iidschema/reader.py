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

import io
from typing import Any

import numpy as np
from construct import ConstructError, StreamError

from . import schema
from .errors import IIDFormatError, IIDVersionError
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

    def iid(self, key: int) -> IID:  # pragma: no cover - interface
        raise NotImplementedError

    def segment(self, key: int) -> Segment:  # pragma: no cover - interface
        raise NotImplementedError

    def heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """Segment bboxes ``(n, 4)`` and areas ``(n,)`` of ``keys`` (int64)."""
        raise NotImplementedError

    def groups(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def meta(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def candidates(self, bbox: tuple[int, int, int, int]) -> np.ndarray:
        """Keys whose segment bbox intersects ``bbox`` (ascending)."""
        keys = np.arange(self.count, dtype=np.int64)
        boxes, _ = self.heads(keys)
        minr, minc, maxr, maxc = bbox
        hit = (boxes[:, 0] < maxr) & (minr < boxes[:, 2]) & (boxes[:, 1] < maxc) & (minc < boxes[:, 3])
        return keys[hit]

    def lookup(self, addresses: list[bytes]) -> np.ndarray | None:
        """Candidate keys for ``addresses`` from an address index, or None
        when the file has none (callers then scan)."""
        return None

    def close(self) -> None:
        self.source.close()


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
        if lut_len % schema.LutEntry0.sizeof():
            raise IIDFormatError(
                f"LUT length {lut_len} is not a multiple of {schema.LutEntry0.sizeof()}", section="lut", offset=lut_off
            )
        self.count = lut_len // schema.LutEntry0.sizeof()
        self._lut: np.ndarray | None = None
        self._groups: dict[str, np.ndarray] | None = None

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

    def _row(self, key: int) -> tuple[int, int, int, int]:
        """Absolute (iid offset, iid length, seg offset, seg length) of ``key``, checked."""
        if not 0 <= key < self.count:
            raise KeyError(f"key {key} out of range (file has {self.count} entries)")
        row = self.lut[key]
        at = self._sections["lut"][0] + key * schema.LutEntry0.sizeof()
        if int(row["key"]) != key:
            raise IIDFormatError(f"LUT row {key} holds key {int(row['key'])}", section="lut", offset=at)
        out = []
        for name, sec in (("iid", "iids"), ("seg", "segs")):
            rel, length = int(row[name]["offset"]), int(row[name]["length"])
            base, size = self._sections[sec]
            if rel + length > size:
                raise IIDFormatError(
                    f"LUT row {key}: {name} record [{rel}, {rel + length}) lies outside the {sec} section ({size} bytes)",
                    section="lut",
                    offset=at,
                )
            out += [base + rel, length]
        return tuple(out)  # type: ignore[return-value]

    # -- records ------------------------------------------------------------

    def iid(self, key: int) -> IID:
        off, length, _, _ = self._row(key)
        head = schema.IID_HEAD0
        if length < head.size:
            raise IIDFormatError(f"IID record of key {key} is {length} bytes, shorter than its head", section="iids", offset=off)
        data = self.source.read(off, length, "iids")
        k, dlen, alen = head.unpack_from(data, 0)
        if k != key:
            raise IIDFormatError(f"IID record holds key {k}, LUT says {key}", section="iids", offset=off)
        if head.size + dlen + alen != length:
            raise IIDFormatError(
                f"IID record of key {key}: lengths {dlen} + {alen} do not fill its {length} bytes", section="iids", offset=off
            )
        domain = bytes(data[head.size : head.size + dlen])
        address = bytes(data[head.size + dlen : length])
        return IID(address=address, domain=domain, key=key)

    def segment(self, key: int) -> Segment:
        _, _, off, length = self._row(key)
        head = schema.SEG_HEAD0
        if length < head.size:
            raise IIDFormatError(f"segment of key {key} is {length} bytes, shorter than its head", section="segs", offset=off)
        data = self.source.read(off, length, "segs")
        k, minr, minc, maxr, maxc, area = head.unpack_from(data, 0)
        if k != key:
            raise IIDFormatError(f"segment holds key {k}, LUT says {key}", section="segs", offset=off)
        if maxr < minr or maxc < minc:
            raise IIDFormatError(f"segment {key} has an inverted bbox {(minr, minc, maxr, maxc)}", section="segs", offset=off)
        regions = Regions()
        rhead = schema.REGION_HEAD0
        pos = head.size
        while pos < length:
            at = off + pos
            if length - pos < rhead.size:
                raise IIDFormatError(f"segment {key}: truncated region head", section="segs", offset=at)
            rlen, a, b, c, d = rhead.unpack_from(data, pos)
            if not (minr <= a < c <= maxr and minc <= b < d <= maxc):
                raise IIDFormatError(
                    f"segment {key}: region bbox {(a, b, c, d)} is empty or outside the segment bbox {(minr, minc, maxr, maxc)}",
                    section="segs",
                    offset=at,
                )
            if rlen != rhead.size + schema.packed_len(c - a, d - b) or pos + rlen > length:
                raise IIDFormatError(
                    f"segment {key}: region length {rlen} does not match its bbox or overruns the segment",
                    section="segs",
                    offset=at,
                )
            regions.append(Region((a, b, c, d), codec=0, payload=bytes(data[pos + rhead.size : pos + rlen])))
            pos += rlen
        return Segment(key, (minr, minc, maxr, maxc), area, regions)

    def heads(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
        lut = self.lut
        rows = lut[keys]
        base, size = self._sections["segs"]
        rel = rows["seg"]["offset"].astype(np.int64)
        length = rows["seg"]["length"].astype(np.int64)
        bad = (rows["key"] != keys) | (length < schema.SEG_HEAD0.size) | (rel + length > size)
        if bad.any():
            # Report the first bad row precisely through the scalar path.
            self._row(int(keys[np.argmax(bad)]))
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

    def groups(self) -> dict[str, np.ndarray]:
        if self._groups is None:
            self._groups = self._parse_groups()
        return self._groups

    def _parse_groups(self) -> dict[str, np.ndarray]:
        off, length = self._sections["groups"]
        parsed = parse(schema.Groups0, self.source.read(off, length, "groups"), "groups", off)
        table, data, data_off = parsed.table, parsed.data, off + parsed.data_start
        if not isinstance(table, list):
            raise IIDFormatError("group table is not a JSON list", section="groups", offset=off + 4)
        out: dict[str, np.ndarray] = {}
        for item in table:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and all(type(item.get(f)) is int and item[f] >= 0 for f in ("offset", "length"))
            ):
                raise IIDFormatError(f"malformed group table item {item!r}", section="groups", offset=off + 4)
            name, g_off, g_len = item["name"], item["offset"], item["length"]
            if name in out:
                raise IIDFormatError(f"group {name!r} is listed twice", section="groups", offset=off + 4)
            if g_len % 4 or g_off + g_len > len(data):
                raise IIDFormatError(
                    f"group {name!r}: keys [{g_off}, {g_off + g_len}) do not fit the group data ({len(data)} bytes)",
                    section="groups",
                    offset=data_off + min(g_off, len(data)),
                )
            keys = np.frombuffer(data, dtype=schema.GROUP_KEY0_DTYPE, count=g_len // 4, offset=g_off).astype(np.int64)
            if keys.size and int(keys.max()) >= self.count:
                raise IIDFormatError(
                    f"group {name!r} holds key {int(keys.max())}, file has {self.count} entries",
                    section="groups",
                    offset=data_off + g_off,
                )
            out[name] = keys
        return out

    def meta(self) -> Any:
        off, length = self._sections["meta"]
        return parse(schema.Meta0, self.source.read(off, length, "meta"), "meta", off)


def open_reader(source: ByteSource) -> Reader:
    """Parse the header of ``source`` and return the reader of its version."""
    if source.size < 4:
        raise IIDFormatError(f"file is {source.size} bytes, too short for a header", section="header", offset=0)
    header = parse(schema.Header, SourceStream(source, 0), "header", 0)
    readers = {0: Reader0}
    if header.version not in readers:  # pragma: no cover - schema raises first
        raise IIDVersionError(header.version, tuple(readers))
    return readers[header.version](source, header.body)
