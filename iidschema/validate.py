"""``iidschema validate``: a conformance checker that reports every problem.

The readers stop at the first problem they meet (and only look at what they
are asked for).  :func:`validate` instead walks the *whole* file with the
layouts declared in :mod:`iidschema.schema` and keeps going after a problem,
so one run lists everything that is wrong with a file: section bounds and
overlaps, LUT consistency, key agreement between the LUT, the IID records and
the segments, region bboxes and lengths, areas against the decoded masks
(every region is decoded with its codec), groups and metadata, every checksum
of version 1 (header, sections, LUT blocks, records, the blocks of groups and
indexes), the index sections against the LUT, unknown codec ids, gaps and
trailing bytes.

Each problem is a :class:`Finding` with a severity (``"error"``: the file
does not follow the format or a reader will refuse part of it;
``"warning"``: legal but suspicious, e.g. unreferenced bytes), a stable code
(``IID001`` ...; the full list is :data:`CODES` and ``docs/CONFORMANCE.md``),
the section, the absolute byte offset and a one-line explanation.

Guarantees (tested by ``tests/test_fuzz.py``): a file with no error reads
completely with :class:`~iidschema.IIDFile` (every entry, mask, group, the
metadata, spatial and address queries); a file the reader refuses has at
least one error.  ``validate`` itself never raises on a bad file, and never
allocates a mask larger than :data:`iidschema.masks.MAX_MASK_PIXELS` (an
oversize claim is reported as ``IID051``).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import masks as _masks
from . import schema
from .batch import add_batch_arguments  # light: Dask is imported only when a batch runs
from .errors import IIDCodecError, IIDError, IIDFormatError

__all__ = ["Finding", "CODES", "validate", "add_validate_parser", "cmd_validate", "summarise"]

ERROR = "error"
WARNING = "warning"

#: Every finding code: ``code -> (severity, meaning)``.  Codes are stable:
#: a code is never reused for another meaning.
CODES: dict[str, tuple[str, str]] = {
    # file and header
    "IID000": (ERROR, "the file cannot be read (I/O error)"),
    "IID001": (ERROR, "the file is shorter than the header of its version"),
    "IID002": (ERROR, "unsupported format version"),
    "IID003": (ERROR, "version 1: bad magic number"),
    "IID004": (ERROR, "version 1: header checksum (header_crc) mismatch"),
    "IID005": (ERROR, "version 1: more than 64 sections, or the section table runs past the end of the file"),
    "IID006": (WARNING, "a reserved field or flag bit is not zero (version-1 header flags, section flag bits 1-15, region flags, block-table reserved field)"),
    # sections
    "IID010": (ERROR, "a section runs past the end of the file"),
    "IID011": (ERROR, "a section overlaps the header or another section (version 0: or is out of order)"),
    "IID012": (ERROR, "version 1: a section id is listed twice"),
    "IID013": (WARNING, "bytes between sections that belong to no section (version 1: more than 7 bytes of alignment padding, or non-zero padding)"),
    "IID014": (WARNING, "trailing bytes after the last section"),
    "IID015": (ERROR, "version 1: a mandatory section (lut, iids, meta, groups, segs) is missing"),
    "IID016": (ERROR, "version 1: an unknown section is marked REQUIRED"),
    "IID017": (WARNING, "version 1: an unknown optional section (readers skip it)"),
    "IID018": (ERROR, "version 1: section checksum mismatch"),
    # LUT
    "IID020": (ERROR, "the LUT length does not match its entries (version 0: multiple of 20; version 1: 64 * count + block CRCs)"),
    "IID021": (ERROR, "version 0: a LUT row's key is not its index"),
    "IID022": (ERROR, "a LUT row locates its IID record outside the iids section"),
    "IID023": (ERROR, "a LUT row locates its segment record outside the segs section"),
    "IID024": (ERROR, "version 1: LUT block checksum mismatch"),
    "IID025": (ERROR, "version 1: a LUT entry has an inverted bbox (max < min)"),
    "IID026": (WARNING, "two LUT rows locate overlapping records"),
    "IID027": (WARNING, "bytes of the iids or segs section referenced by no LUT row"),
    # IID records
    "IID030": (ERROR, "an IID record is shorter than its 12-byte head"),
    "IID031": (ERROR, "an IID record's key disagrees with its LUT row"),
    "IID032": (ERROR, "an IID record's domain and address lengths do not fill the record"),
    "IID033": (ERROR, "version 1: IID record checksum mismatch"),
    # segments and regions
    "IID040": (ERROR, "a segment record is shorter than its head"),
    "IID041": (ERROR, "a segment record's key disagrees with its LUT row"),
    "IID042": (ERROR, "version 0: a segment has an inverted bbox (max < min)"),
    "IID043": (ERROR, "a region head is truncated by the end of its segment record"),
    "IID044": (ERROR, "a region bbox is empty or lies outside its segment bbox"),
    "IID045": (ERROR, "a region's length does not match its bbox (version 0) or overruns its segment record"),
    "IID046": (ERROR, "version 1: a segment's region_count disagrees with its record (too many regions, or bytes after the last)"),
    "IID047": (ERROR, "version 1: segment record checksum mismatch"),
    "IID048": (ERROR, "a region uses a codec id no installed codec has"),
    "IID049": (ERROR, "a region payload does not decode to its bbox with its codec"),
    "IID050": (ERROR, "a segment's area differs from the number of pixels of its decoded mask"),
    "IID051": (ERROR, "a region or segment bbox claims more pixels than iidschema.masks.MAX_MASK_PIXELS (not decoded; raise the limit if you trust the file)"),
    "IID052": (WARNING, "packbits padding bits after the last pixel are not zero"),
    "IID053": (WARNING, "regions of one segment share pixels (writers store disjoint components)"),
    "IID054": (ERROR, "version 1: the codecs section is malformed or lists a codec id no installed codec has"),
    "IID055": (WARNING, "version 1: a region uses a codec id the codecs section does not list"),
    # meta and groups
    "IID060": (ERROR, "the metadata is not valid UTF-8 JSON (including JSON nested too deeply to parse)"),
    "IID061": (ERROR, "the groups section is shorter than its JSON length prefix says"),
    "IID062": (ERROR, "the group table is not a JSON list of {name: str, offset: int >= 0, length: int >= 0}"),
    "IID063": (ERROR, "a group name is listed twice"),
    "IID064": (ERROR, "a group's key list lies outside the group data or is not a multiple of 4 bytes"),
    "IID065": (ERROR, "a group holds a key not below the entry count"),
    "IID066": (WARNING, "a group lists a key twice (version 1: or not in ascending order)"),
    "IID067": (WARNING, "bytes of the group data referenced by no group"),
    # block CRCs
    "IID070": (ERROR, "version 1: the block_crcs section is malformed, or a table does not match its section's size"),
    "IID071": (ERROR, "version 1: block checksum mismatch in a section with a block CRC table"),
    "IID072": (WARNING, "version 1: a block CRC table for a section the file does not have, or a second table for one section"),
    # indexes
    "IID080": (ERROR, "version 1: the spatial index is malformed (queries raise)"),
    "IID081": (ERROR, "version 1: the spatial index disagrees with the LUT (missing, extra or misplaced entries)"),
    "IID082": (ERROR, "version 1: the address index is malformed (lookups raise)"),
    "IID083": (ERROR, "version 1: the address index disagrees with the IID records"),
    # the checker itself
    "IID099": (ERROR, "internal error: the validator failed on this part of the file (a bug in iidschema; please report it)"),
}

#: Findings of one code kept per file by default; the rest are counted in
#: one summary finding of that code (``max_per_code=None``: keep all).
DEFAULT_MAX_PER_CODE = 100


@dataclass(frozen=True)
class Finding:
    """One problem found in a file.

    :param code: stable identifier (``IID001`` ...; see :data:`CODES`).
    :param severity: ``"error"`` or ``"warning"``.
    :param section: the part of the file (``"header"``, ``"lut"``, ``"segs"``, ...).
    :param offset: absolute byte offset in the file, when there is one.
    :param message: one line of explanation.
    """

    code: str
    severity: str
    section: str | None
    offset: int | None
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.section or "-"
        if self.offset is not None:
            where += f"@{self.offset}"
        return f"{self.severity} {self.code} [{where}] {self.message}"


# --------------------------------------------------------------------------
# Layout helpers derived from the declarations
# --------------------------------------------------------------------------

def _field_offsets(con: Any) -> dict[str, tuple[int, Any]]:
    """``name -> (offset, subcon)`` of a fixed-size Struct declaration."""
    out, pos = {}, 0
    for sub in con.subcons:
        if sub.name:
            out[sub.name] = (pos, sub)
        pos += sub.sizeof()
    return out


_HEADER1_FIELDS = _field_offsets(schema.HeaderFixed1)
_SECTION1_DTYPE = schema.dtype_of(schema.SectionEntry1)
_U32 = struct.Struct(schema.format_of(schema.Int32ul))
_GROUPS_LEN = struct.Struct(schema.format_of(schema.Groups0.subcons[0].subcon.lengthfield))
_SPATIAL_HEAD_SIZE = schema.SpatialHeader.sizeof()
_SPATIAL_NODE_DTYPE = schema.dtype_of(schema.SpatialNode)
_ADDR_HEAD_SIZE = schema.AddressHeader.sizeof()
_ADDR_BUCKET_DTYPE = schema.dtype_of(schema.AddressBucket)
_ADDR_RECORD_DTYPE = schema.dtype_of(schema.AddressRecord)


def _u32_field(buf: Any, name: str) -> int:
    off, sub = _HEADER1_FIELDS[name]
    return struct.unpack_from(schema.format_of(sub), buf, off)[0]


def _crc32c(data: Any) -> int:
    import crc32c

    return crc32c.crc32c(data)


class _Stop(Exception):
    """Abandon the current part of the walk (already reported)."""


# --------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------

class _Validator:
    def __init__(self, buf: memoryview, max_per_code: int | None):
        self.buf = buf
        self.size = len(buf)
        self.max_per_code = max_per_code
        self.findings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self.count = 0
        self.sections: dict[str, tuple[int, int]] = {}  # usable (in-bounds) sections
        self.addresses: dict[int, bytes] = {}
        self._codecs: dict[int, Any] = {}
        self.boxes: np.ndarray | None = None  # version 1: LUT bboxes (n, 4)

    # -- reporting ----------------------------------------------------------

    def add(self, code: str, section: str | None, offset: int | None, message: str) -> None:
        n = self.counts.get(code, 0) + 1
        self.counts[code] = n
        if self.max_per_code is None or n <= self.max_per_code:
            self.findings.append(Finding(code, CODES[code][0], section, None if offset is None else int(offset), message))

    def guard(self, section: str, offset: int | None, step: Callable[[], Any]) -> Any:
        """Run one part of the walk; turn a crash of the validator (a bug)
        into an IID099 finding instead of stopping the walk."""
        try:
            return step()
        except _Stop:
            return None
        except RecursionError:
            self.add("IID099", section, offset, "recursion limit reached while checking this part")
        except MemoryError:
            self.add("IID099", section, offset, "out of memory while checking this part")
        except Exception as exc:  # noqa: BLE001 - the validator must not crash on any file
            self.add("IID099", section, offset, f"{type(exc).__name__}: {exc}")
        return None

    def result(self) -> list[Finding]:
        out = list(self.findings)
        if self.max_per_code is not None:
            for code, n in self.counts.items():
                if n > self.max_per_code:
                    out.append(Finding(code, CODES[code][0], None, None,
                                       f"... and {n - self.max_per_code} more {code} findings not listed (max_per_code={self.max_per_code})"))
        return out

    # -- entry point --------------------------------------------------------

    def run(self) -> list[Finding]:
        if self.size < 4:
            self.add("IID001", "header", 0, f"file is {self.size} bytes, too short for even the version field")
            return self.result()
        version = _U32.unpack_from(self.buf, 0)[0]
        if version == 0:
            self.guard("file", 0, self.walk_v0)
        elif version == 1:
            self.guard("file", 0, self.walk_v1)
        else:
            self.add("IID002", "header", 0, f"format version {version} is not one of {', '.join(map(str, schema.SUPPORTED_VERSIONS))}")
        return self.result()

    # -- shared pieces ------------------------------------------------------

    def in_bounds(self, off: int, length: int) -> bool:
        return 0 <= off and 0 <= length and off + length <= self.size

    def check_gaps(self, spans: list[tuple[int, int, str]], start: int, align: int) -> None:
        """Warn about bytes in no section (``spans`` in bounds, any order).

        ``align``: gaps shorter than this made only of zero bytes are
        alignment padding (version 1) and not reported."""
        pos = start
        for off, length, name in sorted(spans):
            if off > pos:
                gap = bytes(self.buf[pos:off])
                if len(gap) >= align or any(gap):
                    self.add("IID013", name, pos, f"{off - pos} bytes between offset {pos} and section {name!r} belong to no section")
            pos = max(pos, off + length)
        if pos < self.size:
            what = "the end of the last section" if spans else "the header (no section lies inside the file)"
            self.add("IID014", "file", pos, f"{self.size - pos} bytes after {what} (file is {self.size} bytes)")

    def record_coverage(self, section: str, rel: np.ndarray, length: np.ndarray, ok: np.ndarray) -> None:
        """Warn about overlapping records and unreferenced bytes of ``section``."""
        base, size = self.sections[section]
        r = rel[ok].astype(np.int64)
        n = length[ok].astype(np.int64)
        keep = n > 0
        r, n = r[keep], n[keep]
        order = np.argsort(r, kind="stable")
        r, n = r[order], n[order]
        ends = r + n
        if r.size > 1:
            prev_end = np.maximum.accumulate(ends)[:-1]
            overlap = r[1:] < prev_end
            for i in np.flatnonzero(overlap)[: (self.max_per_code or 10**9)].tolist():
                self.add("IID026", section, base + int(r[i + 1]), f"record at +{int(r[i + 1])} overlaps an earlier record ending at +{int(prev_end[i])}")
        covered = 0
        if r.size:
            # total bytes covered by the union of the records
            starts = r
            cum_end = np.maximum.accumulate(ends)
            prev = np.concatenate(([0], cum_end[:-1]))
            covered = int(np.sum(np.maximum(0, ends - np.maximum(starts, prev)) * (ends > prev)))
        if covered < size:
            self.add("IID027", section, base, f"{size - covered} of the section's {size} bytes belong to no record")

    def iid_record(self, key: int, off: int, length: int) -> None:
        head = schema.IID_HEAD0
        if length < head.size:
            self.add("IID030", "iids", off, f"IID record of entry {key} is {length} bytes, shorter than its {head.size}-byte head")
            return
        k, dlen, alen = head.unpack_from(self.buf, off)
        if k != key:
            self.add("IID031", "iids", off, f"IID record of entry {key} holds key {k}")
        if head.size + dlen + alen != length:
            self.add("IID032", "iids", off, f"IID record of entry {key}: {head.size} + domain {dlen} + address {alen} bytes != record length {length}")
            return
        self.addresses[key] = bytes(self.buf[off + head.size + dlen : off + length])

    def codec(self, cid: int) -> Any:
        if cid not in self._codecs:
            from .codecs import get_codec

            try:
                self._codecs[cid] = get_codec(cid)
            except IIDCodecError:
                self._codecs[cid] = None
        return self._codecs[cid]

    def decode_region(self, key: int, at: int, bbox: tuple[int, int, int, int], cid: int, payload: Any) -> np.ndarray | None:
        """The region's mask, or None (after reporting why not)."""
        h, w = bbox[2] - bbox[0], bbox[3] - bbox[1]
        if h * w > _masks.MAX_MASK_PIXELS:
            self.add("IID051", "segs", at, f"entry {key}: region {bbox} of {h} x {w} pixels exceeds MAX_MASK_PIXELS ({_masks.MAX_MASK_PIXELS}); not decoded")
            return None
        codec = self.codec(cid)
        if codec is None:
            self.add("IID048", "segs", at, f"entry {key}: region {bbox} uses codec id {cid}, which no installed codec has")
            return None
        try:
            mask = codec.decode(payload, (h, w))
        except IIDError as exc:
            self.add("IID049", "segs", at, f"entry {key}: region {bbox} ({getattr(codec, 'name', cid)}): {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - a codec bug, reported as a finding
            self.add("IID049", "segs", at, f"entry {key}: region {bbox}: codec {getattr(codec, 'name', cid)!r} crashed with {type(exc).__name__}: {exc}")
            return None
        mask = np.asarray(mask)
        if mask.shape != (h, w) or mask.dtype != np.bool_:
            self.add("IID049", "segs", at, f"entry {key}: region {bbox} decoded to {mask.dtype} {mask.shape}, expected bool {(h, w)}")
            return None
        if cid == 0 and (h * w) % 8:
            last = memoryview(payload)[-1] if len(payload) else 0
            if last & ((1 << (8 - (h * w) % 8)) - 1):
                self.add("IID052", "segs", at, f"entry {key}: region {bbox}: padding bits of the last payload byte are not zero")
        return mask

    def check_area(self, key: int, at: int, section: str, bbox: tuple[int, int, int, int], area: int,
                   regions: list[tuple[int, tuple[int, int, int, int], int, Any]], complete: bool) -> None:
        """Decode every region (one at a time) and compare ``area`` with the
        pixels of their OR.

        Memory stays within one region mask plus, only for regions whose
        bboxes overlap, one canvas of their union bbox (inside the segment
        bbox, so within MAX_MASK_PIXELS): never every region mask at once,
        never a canvas of the whole segment for disjoint regions."""
        h, w = bbox[2] - bbox[0], bbox[3] - bbox[1]
        too_big = h * w > _masks.MAX_MASK_PIXELS
        if too_big:
            self.add("IID051", section, at, f"entry {key}: segment bbox {bbox} of {h} x {w} pixels exceeds MAX_MASK_PIXELS ({_masks.MAX_MASK_PIXELS}); its mask cannot be composed")
        shared = _overlapping([b for _, b, _, _ in regions]) if len(regions) > 1 else np.zeros(len(regions), bool)
        canvas = None
        if shared.any() and not too_big:
            sb = np.asarray([b for (_, b, _, _), s in zip(regions, shared) if s], dtype=np.int64)
            c0 = (int(sb[:, 0].min()), int(sb[:, 1].min()))
            canvas = np.zeros((int(sb[:, 2].max()) - c0[0], int(sb[:, 3].max()) - c0[1]), dtype=bool)
        disjoint = 0
        total = 0
        for (p, rbox, cid, payload), s in zip(regions, shared):
            mask = self.decode_region(key, p, rbox, cid, payload)
            if mask is None:
                complete = False
                continue
            n = int(np.count_nonzero(mask))
            total += n
            if not s:
                disjoint += n
            elif canvas is not None:
                canvas[rbox[0] - c0[0] : rbox[2] - c0[0], rbox[1] - c0[1] : rbox[3] - c0[1]] |= mask
            del mask
        if not complete or too_big:
            return
        union = disjoint + (int(np.count_nonzero(canvas)) if canvas is not None else 0)
        if union != total:
            self.add("IID053", "segs", at, f"entry {key}: its regions share {total - union} pixels")
        if union != area:
            self.add("IID050", section, at, f"entry {key}: area is {area}, its decoded mask has {union} pixels")

    def groups(self, off: int, length: int, version: int) -> None:
        sec = "groups"
        hs = _GROUPS_LEN.size
        if length < hs:
            self.add("IID061", sec, off, f"groups section is {length} bytes, shorter than its {hs}-byte JSON length")
            return
        (json_len,) = _GROUPS_LEN.unpack_from(self.buf, off)
        if json_len > length - hs:
            self.add("IID061", sec, off, f"group table JSON length {json_len} runs past the end of the {length}-byte section")
            return
        try:
            table = schema.Json().parse(bytes(self.buf[off + hs : off + hs + json_len]))
        except IIDFormatError as exc:
            self.add("IID062", sec, off + hs, f"group table: {exc.message}")
            return
        except RecursionError:
            self.add("IID062", sec, off + hs, "group table: JSON nested too deeply to parse")
            return
        if not isinstance(table, list):
            self.add("IID062", sec, off + hs, f"group table is a JSON {type(table).__name__}, not a list")
            return
        data_off = off + hs + json_len
        data_len = length - hs - json_len
        seen: set[str] = set()
        used = np.zeros(data_len, dtype=bool) if data_len <= 1 << 26 else None
        for i, item in enumerate(table):
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and all(type(item.get(f)) is int and item[f] >= 0 for f in ("offset", "length"))
            ):
                self.add("IID062", sec, off + hs, f"group table item {i} is malformed: {_short(item)}")
                continue
            name, g_off, g_len = item["name"], item["offset"], item["length"]
            if name in seen:
                self.add("IID063", sec, off + hs, f"group {name!r} is listed twice")
            seen.add(name)
            if g_len % 4 or g_off + g_len > data_len:
                self.add("IID064", sec, data_off + min(g_off, data_len),
                         f"group {name!r}: keys [{g_off}, {g_off + g_len}) do not fit the {data_len}-byte group data or are not a multiple of 4 bytes")
                continue
            if used is not None:
                used[g_off : g_off + g_len] = True
            keys = np.frombuffer(self.buf, dtype=schema.GROUP_KEY0_DTYPE, count=g_len // 4, offset=data_off + g_off).astype(np.int64)
            if keys.size and int(keys.max()) >= self.count:
                bad = int(np.count_nonzero(keys >= self.count))
                self.add("IID065", sec, data_off + g_off, f"group {name!r}: {bad} keys not below the entry count {self.count} (largest {int(keys.max())})")
            if keys.size > 1:
                if np.unique(keys).size != keys.size:
                    self.add("IID066", sec, data_off + g_off, f"group {name!r} lists {keys.size - np.unique(keys).size} keys twice")
                elif version >= 1 and not (np.diff(keys) > 0).all():
                    self.add("IID066", sec, data_off + g_off, f"group {name!r}: keys are not in ascending order")
        if used is not None and data_len and not used.all():
            self.add("IID067", sec, data_off, f"{int(np.count_nonzero(~used))} of the {data_len} group data bytes belong to no group")

    def meta(self, off: int, length: int) -> None:
        try:
            schema.Meta0.parse(bytes(self.buf[off : off + length]))
        except IIDFormatError as exc:
            self.add("IID060", "meta", off, exc.message)
        except RecursionError:
            self.add("IID060", "meta", off, "metadata JSON is nested too deeply to parse")

    # -- version 0 ----------------------------------------------------------

    def walk_v0(self) -> None:
        size = self.size
        if size < schema.HEADER0_SIZE:
            self.add("IID001", "header", 0, f"file is {size} bytes, shorter than the {schema.HEADER0_SIZE}-byte version-0 header")
            return
        header = schema.Header0.parse(bytes(self.buf[: schema.HEADER0_SIZE]))
        end = schema.HEADER0_SIZE
        spans = []
        for name in ("lut", "iids", "meta", "groups", "segs"):
            off, length = header[name].offset, header[name].length
            if not self.in_bounds(off, length):
                self.add("IID010", name, off, f"section {name!r} [{off}, {off + length}) runs past the end of the file ({size} bytes)")
            else:
                self.sections[name] = (off, length)
                spans.append((off, length, name))
            if off < end:
                self.add("IID011", name, off, f"section {name!r} starts at {off}, before the end ({end}) of the header or the previous section "
                         "(version 0: lut, iids, meta, groups, segs in this order, not overlapping)")
            end = off + length
        self.check_gaps(spans, schema.HEADER0_SIZE, align=1)

        count = 0
        rows = None
        if "lut" in self.sections:
            off, length = self.sections["lut"]
            if length % schema.LUT0_ROW:
                self.add("IID020", "lut", off, f"LUT length {length} is not a multiple of {schema.LUT0_ROW}")
            count = length // schema.LUT0_ROW
            rows = np.frombuffer(self.buf, dtype=schema.LUT0_DTYPE, count=count, offset=off)
        self.count = count
        if rows is not None:
            self.guard("lut", self.sections["lut"][0], lambda: self.entries_v0(rows))
        if "meta" in self.sections:
            self.guard("meta", self.sections["meta"][0], lambda: self.meta(*self.sections["meta"]))
        if "groups" in self.sections:
            self.guard("groups", self.sections["groups"][0], lambda: self.groups(*self.sections["groups"], version=0))

    def entries_v0(self, rows: np.ndarray) -> None:
        lut_off = self.sections["lut"][0]
        n = rows.size
        keys = np.arange(n, dtype=np.int64)
        for i in np.flatnonzero(rows["key"].astype(np.int64) != keys).tolist():
            self.add("IID021", "lut", lut_off + i * schema.LUT0_ROW, f"LUT row {i} holds key {int(rows['key'][i])}")
        loc = {}
        for kind, section, code in (("iid", "iids", "IID022"), ("seg", "segs", "IID023")):
            rel = rows[kind]["offset"].astype(np.int64)
            length = rows[kind]["length"].astype(np.int64)
            if section not in self.sections:
                loc[kind] = None
                continue
            base, size = self.sections[section]
            ok = rel + length <= size
            for i in np.flatnonzero(~ok).tolist():
                self.add(code, "lut", lut_off + i * schema.LUT0_ROW,
                         f"LUT row {i}: {kind} record [{int(rel[i])}, {int(rel[i] + length[i])}) lies outside the {section} section ({size} bytes)")
            self.record_coverage(section, rel, length, ok)
            loc[kind] = (base + rel, length, ok)
        for key in range(n):
            if loc["iid"] is not None and loc["iid"][2][key]:
                off, length = int(loc["iid"][0][key]), int(loc["iid"][1][key])
                self.guard("iids", off, lambda: self.iid_record(key, off, length))
            if loc["seg"] is not None and loc["seg"][2][key]:
                off, length = int(loc["seg"][0][key]), int(loc["seg"][1][key])
                self.guard("segs", off, lambda: self.segment_v0(key, off, length))

    def segment_v0(self, key: int, off: int, length: int) -> None:
        head, rhead = schema.SEG_HEAD0, schema.REGION_HEAD0
        buf = self.buf
        if length < head.size:
            self.add("IID040", "segs", off, f"segment record of entry {key} is {length} bytes, shorter than its {head.size}-byte head")
            return
        k, minr, minc, maxr, maxc, area = head.unpack_from(buf, off)
        bbox = (minr, minc, maxr, maxc)
        if k != key:
            self.add("IID041", "segs", off, f"segment record of entry {key} holds key {k}")
        inverted = maxr < minr or maxc < minc
        if inverted:
            self.add("IID042", "segs", off, f"entry {key}: segment bbox {bbox} is inverted")
        regions = []
        complete = not inverted
        p, end = off + head.size, off + length
        while p < end:
            if end - p < rhead.size:
                self.add("IID043", "segs", p, f"entry {key}: {end - p} bytes left in the record, too few for a {rhead.size}-byte region head")
                complete = False
                break
            rlen, a, b, c, d = rhead.unpack_from(buf, p)
            rbox = (a, b, c, d)
            good = True
            if not (a < c and b < d):
                self.add("IID044", "segs", p, f"entry {key}: region bbox {rbox} is empty or inverted")
                good = False
            elif not inverted and not (minr <= a and c <= maxr and minc <= b and d <= maxc):
                self.add("IID044", "segs", p, f"entry {key}: region bbox {rbox} lies outside the segment bbox {bbox}")
                good = False
            if rlen < rhead.size or rlen > end - p:
                self.add("IID045", "segs", p, f"entry {key}: region length {rlen} is shorter than its head or overruns the segment record ({end - p} bytes left)")
                complete = False
                break
            if good and rlen != rhead.size + schema.packed_len(c - a, d - b):
                self.add("IID045", "segs", p, f"entry {key}: region length {rlen} != {rhead.size} + ceil({c - a}*{d - b}/8) for its bbox {rbox}")
                good = False
            if good:
                regions.append((p, rbox, 0, buf[p + rhead.size : p + rlen]))
            else:
                complete = False
            p += rlen
        if not inverted:
            self.check_area(key, off, "segs", bbox, area, regions, complete)

    # -- version 1 ----------------------------------------------------------

    def walk_v1(self) -> None:
        size, buf = self.size, self.buf
        fixed = schema.HEADER1_FIXED_SIZE
        if size < fixed:
            self.add("IID001", "header", 0, f"file is {size} bytes, shorter than the {fixed}-byte fixed version-1 header")
            return
        moff, msub = _HEADER1_FIELDS["magic"]
        magic = bytes(buf[moff : moff + msub.sizeof()])
        if magic != schema.MAGIC1:
            self.add("IID003", "header", moff, f"magic is {magic!r}, expected {schema.MAGIC1!r}")
        count = _u32_field(buf, "entry_count")
        flags = _u32_field(buf, "flags")
        nsec = _u32_field(buf, "section_count")
        if flags:
            self.add("IID006", "header", _HEADER1_FIELDS["flags"][0], f"header flags are {flags:#x}, reserved (0)")
        if nsec > schema.MAX_SECTIONS:
            self.add("IID005", "header", _HEADER1_FIELDS["section_count"][0], f"section_count {nsec} exceeds {schema.MAX_SECTIONS}")
        entry_size = _SECTION1_DTYPE.itemsize
        walk = min(nsec, schema.MAX_SECTIONS, max(0, (size - fixed) // entry_size))
        hsize = schema.header1_size(nsec)
        if hsize > size:
            self.add("IID005", "header", fixed, f"section table of {nsec} sections needs a {hsize}-byte header; the file is {size} bytes")
        elif nsec <= schema.MAX_SECTIONS:
            stored = _U32.unpack_from(buf, hsize - 4)[0]
            if _crc32c(buf[: hsize - 4]) != stored:
                self.add("IID004", "header", hsize - 4, "header checksum mismatch: the header or its section table is damaged")
        self.count = count
        table = np.frombuffer(buf, dtype=_SECTION1_DTYPE, count=walk, offset=fixed)
        hend = min(hsize, size) if nsec <= schema.MAX_SECTIONS else fixed + walk * entry_size
        spans: list[tuple[int, int, str]] = []
        seen: dict[int, int] = {}
        crcs: dict[str, int] = {}
        for i in range(walk):
            at = fixed + i * entry_size
            sid, sflags, crc = int(table["id"][i]), int(table["flags"][i]), int(table["crc"][i])
            off, length = int(table["offset"][i]), int(table["length"][i])
            name = schema.SectionId.NAMES.get(sid)
            label = name or f"section {sid}"
            if sflags & ~schema.SECTION_REQUIRED:
                self.add("IID006", "header", at, f"{label}: reserved section flag bits set ({sflags:#x})")
            if sid in seen:
                self.add("IID012", "header", at, f"section id {sid} ({label}) is listed twice")
            seen[sid] = i
            inside = self.in_bounds(off, length)
            if not inside:
                self.add("IID010", label, off, f"{label} [{off}, {off + length}) runs past the end of the file ({size} bytes)")
            if off < hend:
                self.add("IID011", "header", at, f"{label} starts at {off}, inside the {hend}-byte header")
            if name is None:
                if sflags & schema.SECTION_REQUIRED:
                    self.add("IID016", "header", at, f"section id {sid} is marked REQUIRED but is not known to this version of the format")
                else:
                    self.add("IID017", "header", at, f"unknown optional section id {sid} ({length} bytes) is skipped by readers")
            if inside:
                spans.append((off, length, label))
                if _crc32c(buf[off : off + length]) != crc:
                    self.add("IID018", label, off, f"{label}: checksum mismatch (the section is damaged)")
                if name is not None and name not in self.sections and off >= hend:
                    self.sections[name] = (off, length)
                    crcs[name] = crc
        ordered = sorted(spans)
        for (o1, n1, a), (o2, _, b) in zip(ordered, ordered[1:]):
            if o1 + n1 > o2:
                self.add("IID011", b, o2, f"{b} at {o2} overlaps {a} [{o1}, {o1 + n1})")
        for sid in schema.SectionId.MANDATORY:
            name = schema.SectionId.NAMES[sid]
            if sid not in seen:
                self.add("IID015", "header", fixed, f"mandatory section {name!r} (id {sid}) is missing")
        self.check_gaps(spans, hend, align=8)

        codec_list = None
        if "codecs" in self.sections:
            codec_list = self.guard("codecs", self.sections["codecs"][0], self.codecs_section)
        if "block_crcs" in self.sections:
            self.guard("block_crcs", self.sections["block_crcs"][0], self.block_crcs)
        used_codecs: set[int] = set()
        if "lut" in self.sections:
            self.guard("lut", self.sections["lut"][0], lambda: self.entries_v1(count, used_codecs))
        if codec_list is not None:
            for cid in sorted(used_codecs - set(codec_list)):
                self.add("IID055", "codecs", self.sections["codecs"][0], f"codec id {cid} is used by regions but not listed in the codecs section")
        if "meta" in self.sections:
            self.guard("meta", self.sections["meta"][0], lambda: self.meta(*self.sections["meta"]))
        if "groups" in self.sections:
            self.guard("groups", self.sections["groups"][0], lambda: self.groups(*self.sections["groups"], version=1))
        if "spatial_index" in self.sections:
            self.guard("spatial_index", self.sections["spatial_index"][0], self.spatial_index)
        if "address_index" in self.sections:
            self.guard("address_index", self.sections["address_index"][0], self.address_index)

    def codecs_section(self) -> list[int] | None:
        off, length = self.sections["codecs"]
        try:
            parsed = schema.Codecs1.parse(bytes(self.buf[off : off + length]))
        except Exception as exc:  # noqa: BLE001 - construct errors
            self.add("IID054", "codecs", off, f"codecs section does not parse ({type(exc).__name__})")
            return None
        ids = [int(i) for i in parsed.ids]
        for cid in ids:
            if self.codec(cid) is None:
                self.add("IID054", "codecs", off, f"codec id {cid} is listed but no installed codec has it (readers refuse the file at open)")
        return ids

    def block_crcs(self) -> None:
        off, length = self.sections["block_crcs"]
        try:
            parsed = schema.BlockCrcs1.parse(bytes(self.buf[off : off + length]))
        except Exception as exc:  # noqa: BLE001 - construct / IIDFormatError
            self.add("IID070", "block_crcs", off, f"block_crcs section does not parse ({type(exc).__name__})")
            return
        seen: set[int] = set()
        for table in parsed.tables:
            sid = int(table.section_id)
            name = schema.SectionId.NAMES.get(sid)
            if table.reserved:
                self.add("IID006", "block_crcs", off, f"block CRC table of section {sid}: reserved field is {table.reserved}")
            if name not in self.sections:
                self.add("IID072", "block_crcs", off, f"block CRC table for section id {sid}, which the file does not have")
                continue
            if sid in seen:
                self.add("IID072", "block_crcs", off, f"second block CRC table for section {name!r} (readers use the last)")
            seen.add(sid)
            base, size = self.sections[name]
            block = int(table.block_size)
            if block == 0 or table.count != (size + block - 1) // block:
                self.add("IID070", "block_crcs", off, f"block CRC table of {name!r}: {table.count} blocks of {block} bytes do not cover its {size} bytes")
                continue
            crcs = np.asarray(table.crcs)
            for b in range(int(table.count)):
                start = base + b * block
                if _crc32c(self.buf[start : min(start + block, base + size)]) != int(crcs[b]):
                    self.add("IID071", name, start, f"{name!r}: block {b} checksum mismatch")

    def entries_v1(self, count: int, used_codecs: set[int]) -> None:
        lut_off, lut_len = self.sections["lut"]
        row = schema.LUT1_ROW
        expected = schema.lut1_size(count)
        if lut_len != expected:
            self.add("IID020", "lut", lut_off, f"LUT is {lut_len} bytes; {count} entries need {expected}")
        n = min(count, lut_len // row)
        rows = np.frombuffer(self.buf, dtype=schema.LUT1_DTYPE, count=n, offset=lut_off)
        if lut_len == expected:
            nblocks = (count + schema.LUT_BLOCK - 1) // schema.LUT_BLOCK
            crcs = np.frombuffer(self.buf, dtype=schema.BLOCK_CRC1_DTYPE, count=nblocks, offset=lut_off + count * row)
            for b in range(nblocks):
                lo, hi = b * schema.LUT_BLOCK, min(count, (b + 1) * schema.LUT_BLOCK)
                at = lut_off + lo * row
                if _crc32c(self.buf[at : lut_off + hi * row]) != int(crcs[b]):
                    self.add("IID024", "lut", at, f"LUT rows {lo}..{hi - 1}: block checksum mismatch")
        bb = rows["bbox"]
        boxes = np.stack([bb["minr"], bb["minc"], bb["maxr"], bb["maxc"]], axis=1).astype(np.int64) if n else np.zeros((0, 4), np.int64)
        inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        for i in np.flatnonzero(inverted).tolist():
            self.add("IID025", "lut", lut_off + i * row, f"entry {i}: bbox {tuple(boxes[i].tolist())} is inverted")
        self.boxes = boxes
        loc = {}
        for kind, section, code in (("iid", "iids", "IID022"), ("seg", "segs", "IID023")):
            if section not in self.sections:
                loc[kind] = None
                continue
            base, size = self.sections[section]
            rel = rows[kind]["offset"]
            length = rows[kind]["length"]
            ok = (rel <= np.uint64(size)) & (length <= np.uint64(size) - np.minimum(rel, np.uint64(size)))
            for i in np.flatnonzero(~ok).tolist():
                self.add(code, "lut", lut_off + i * row,
                         f"entry {i}: {kind} record [{int(rel[i])}, {int(rel[i]) + int(length[i])}) lies outside the {section} section ({size} bytes)")
            rel64 = np.where(ok, rel, 0).astype(np.int64)
            len64 = np.where(ok, length, 0).astype(np.int64)
            self.record_coverage(section, rel64, len64, ok)
            loc[kind] = (base + rel64, len64, ok)
        for key in range(n):
            r = rows[key]
            if loc["iid"] is not None and loc["iid"][2][key]:
                off, length = int(loc["iid"][0][key]), int(loc["iid"][1][key])
                if _crc32c(self.buf[off : off + length]) != int(r["iid_crc"]):
                    self.add("IID033", "iids", off, f"IID record of entry {key}: checksum mismatch")
                self.guard("iids", off, lambda: self.iid_record(key, off, length))
            if loc["seg"] is not None and loc["seg"][2][key]:
                off, length = int(loc["seg"][0][key]), int(loc["seg"][1][key])
                if _crc32c(self.buf[off : off + length]) != int(r["seg_crc"]):
                    self.add("IID047", "segs", off, f"segment record of entry {key}: checksum mismatch")
                box = tuple(int(v) for v in boxes[key])
                self.guard("segs", off, lambda: self.segment_v1(key, off, length, box, int(r["area"]), bool(inverted[key]),
                                                                 lut_off + key * row, used_codecs))

    def segment_v1(self, key: int, off: int, length: int, bbox: tuple[int, int, int, int], area: int, inverted: bool,
                   lut_at: int, used_codecs: set[int]) -> None:
        head, rhead = schema.SEG_HEAD1, schema.REGION_HEAD1
        buf = self.buf
        if length < head.size:
            self.add("IID040", "segs", off, f"segment record of entry {key} is {length} bytes, shorter than its {head.size}-byte head")
            return
        k, nreg = head.unpack_from(buf, off)
        if k != key:
            self.add("IID041", "segs", off, f"segment record of entry {key} holds key {k}")
        fits = (length - head.size) // rhead.size
        complete = not inverted
        if nreg > fits:
            self.add("IID046", "segs", off, f"entry {key}: region_count {nreg} is more than its {length}-byte record can hold")
            complete = False
        minr, minc, maxr, maxc = bbox
        regions = []
        p, end = off + head.size, off + length
        for _ in range(min(nreg, fits)):
            if end - p < rhead.size:
                self.add("IID043", "segs", p, f"entry {key}: {end - p} bytes left in the record, too few for a {rhead.size}-byte region head")
                complete = False
                break
            a, b, c, d, cid, rflags, plen = rhead.unpack_from(buf, p)
            rbox = (a, b, c, d)
            good = True
            if not (a < c and b < d):
                self.add("IID044", "segs", p, f"entry {key}: region bbox {rbox} is empty or inverted")
                good = False
            elif not inverted and not (minr <= a and c <= maxr and minc <= b and d <= maxc):
                self.add("IID044", "segs", p, f"entry {key}: region bbox {rbox} lies outside the entry bbox {bbox}")
                good = False
            if rflags:
                self.add("IID006", "segs", p, f"entry {key}: region flags are {rflags:#x}, reserved (0)")
            used_codecs.add(cid)
            q = p + rhead.size
            if plen > end - q:
                self.add("IID045", "segs", p, f"entry {key}: region payload of {plen} bytes overruns the segment record ({end - q} bytes left)")
                complete = False
                p = end
                break
            if good:
                regions.append((p, rbox, cid, buf[q : q + plen]))
            else:
                complete = False
                if self.codec(cid) is None:
                    self.add("IID048", "segs", p, f"entry {key}: region uses codec id {cid}, which no installed codec has")
            p = q + plen
        else:
            if nreg <= fits and p != end:
                self.add("IID046", "segs", p, f"entry {key}: {end - p} bytes after its {nreg} regions")
                complete = False
        if not inverted:
            self.check_area(key, lut_at, "lut", bbox, area, regions, complete)

    # -- version-1 indexes --------------------------------------------------

    def _reader(self, lo: int, hi: int) -> Callable[[int, int], memoryview]:
        buf = self.buf

        def read(o: int, n: int) -> memoryview:
            if o < lo or n < 0 or o + n > hi:
                raise IIDFormatError(f"read [{o}, {o + n}) outside the section [{lo}, {hi})", offset=o)
            return buf[o : o + n]

        return read

    def spatial_index(self) -> None:
        from .index.spatial import SpatialIndex, level_sizes

        sec = "spatial_index"
        off, length = self.sections[sec]
        try:
            idx = SpatialIndex(self._reader(off, off + length), off, length)
        except IIDFormatError as exc:
            self.add("IID080", sec, exc.offset if exc.offset is not None else off, exc.message)
            return
        if idx.num_entries != self.count:
            self.add("IID081", sec, off, f"spatial index covers {idx.num_entries} entries, the file has {self.count}")
        try:
            found = np.asarray(idx.search((0, 0, schema.MAX_U32 + 1, schema.MAX_U32 + 1)), dtype=np.int64)
        except IIDFormatError as exc:
            self.add("IID080", sec, exc.offset if exc.offset is not None else off, f"a query fails: {exc.message}")
            return
        boxes = self.boxes
        if boxes is None or len(boxes) != self.count or self.count == 0:
            return  # the LUT is unusable (already reported)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        want = np.flatnonzero(nonempty)
        if found.size != want.size or not np.array_equal(np.sort(found), want):
            missing = np.setdiff1d(want, found)
            extra = np.setdiff1d(found, want)
            self.add("IID081", sec, off, f"a whole-image query finds {found.size} entries, {want.size} have a non-empty bbox "
                     f"({missing.size} missing, e.g. {missing[:5].tolist()}; {extra.size} extra, e.g. {extra[:5].tolist()})")
        # every leaf must carry its entry's bbox, or queries miss it
        sizes = level_sizes(idx.num_entries, idx.node_size)
        if not sizes:
            return
        leaf_at = off + _SPATIAL_HEAD_SIZE + sum(sizes[1:]) * _SPATIAL_NODE_DTYPE.itemsize
        leaves = np.frombuffer(self.buf, dtype=_SPATIAL_NODE_DTYPE, count=sizes[0], offset=leaf_at)
        lb = np.stack([leaves["minr"], leaves["minc"], leaves["maxr"], leaves["maxc"]], axis=1).astype(np.int64)
        refs = leaves["ref"].astype(np.int64)
        live = (lb[:, 2] > lb[:, 0]) & (lb[:, 3] > lb[:, 1]) & (refs < self.count)
        wrong = np.flatnonzero(live & (lb != boxes[np.where(live, refs, 0)]).any(axis=1))
        for i in wrong[: (self.max_per_code or 10**9)].tolist():
            self.add("IID081", sec, leaf_at + i * _SPATIAL_NODE_DTYPE.itemsize,
                     f"leaf {i} gives entry {int(refs[i])} the bbox {tuple(lb[i].tolist())}, the LUT says {tuple(boxes[refs[i]].tolist())}")
        counts = np.bincount(refs[live], minlength=self.count)[: self.count]
        dup = np.flatnonzero(counts > 1)
        if dup.size:
            self.add("IID081", sec, leaf_at, f"{dup.size} entries have more than one leaf (e.g. {dup[:5].tolist()})")

    def address_index(self) -> None:
        from .index.address import AddressIndex, address_hash

        sec = "address_index"
        off, length = self.sections[sec]
        try:
            idx = AddressIndex(self._reader(off, off + length), off, length)
        except IIDFormatError as exc:
            self.add("IID082", sec, exc.offset if exc.offset is not None else off, exc.message)
            return
        if idx.num_entries != self.count:
            self.add("IID083", sec, off, f"address index covers {idx.num_entries} entries, the file has {self.count}")
        bits, n = idx.bucket_bits, idx.num_entries
        nb = 1 << bits
        table_at = off + _ADDR_HEAD_SIZE
        starts = np.frombuffer(self.buf, dtype=_ADDR_BUCKET_DTYPE, count=nb + 1, offset=table_at)["start"].astype(np.int64)
        bad = (np.diff(starts) < 0) | (starts[1:] > n)
        if bad.any() or starts[0] > n:
            i = int(np.argmax(bad)) if bad.any() else 0
            self.add("IID082", sec, table_at + i * _ADDR_BUCKET_DTYPE.itemsize,
                     f"bucket table is not a non-decreasing list of record indices <= {n} (first bad bucket {i})")
            return
        rec_at = table_at + (nb + 1) * _ADDR_BUCKET_DTYPE.itemsize
        recs = np.frombuffer(self.buf, dtype=_ADDR_RECORD_DTYPE, count=n, offset=rec_at)
        hashes = recs["hash"].astype(np.uint64)
        rkeys = recs["key"].astype(np.int64)
        size_of = _ADDR_RECORD_DTYPE.itemsize
        # records of bucket b are starts[b] .. starts[b+1]-1: each must hash into b
        lo, hi = int(starts[0]), int(starts[-1])
        bucket = np.repeat(np.arange(nb, dtype=np.int64), np.diff(starts))
        inb = (hashes[lo:hi] >> np.uint64(64 - bits)).astype(np.int64) if bits else np.zeros(hi - lo, np.int64)
        wrong = np.flatnonzero((inb != bucket) | (rkeys[lo:hi] >= n))
        if wrong.size:
            i = lo + int(wrong[0])
            self.add("IID082", sec, rec_at + i * size_of, f"{wrong.size} records lie outside their bucket or refer to a key past {n} (first: record {i})")
        h1, h0 = hashes[1:], hashes[:-1]
        k1, k0 = rkeys[1:], rkeys[:-1]
        order = (h1 > h0) | ((h1 == h0) & (k1 > k0))
        if not order.all():
            i = 1 + int(np.argmin(order))
            self.add("IID082", sec, rec_at + i * size_of, f"record {i} is out of (hash, key) order")
        # content: exactly one record (hash(address), key) per entry
        if len(self.addresses) == self.count:
            want_h = np.fromiter((address_hash(self.addresses[k]) for k in range(self.count)), dtype=np.uint64, count=self.count)
            want = set(zip(want_h.tolist(), range(self.count)))
            have = set(zip(hashes.tolist(), rkeys.tolist()))
            if want != have:
                self.add("IID083", sec, off, f"address index records differ from the entries' addresses "
                         f"({len(want - have)} missing, {len(have - want)} extra)")


def _overlapping(boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """For each box, whether it intersects another one (sort and sweep on rows)."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    out = np.zeros(len(b), dtype=bool)
    order = np.argsort(b[:, 0], kind="stable")
    sb = b[order]
    for i in range(len(sb) - 1):
        j = i + 1 + int(np.searchsorted(sb[i + 1 :, 0], sb[i, 2], side="left"))
        rest = sb[i + 1 : j]
        hit = (rest[:, 1] < sb[i, 3]) & (sb[i, 1] < rest[:, 3])
        if hit.any():
            out[order[i]] = True
            out[order[i + 1 : j][hit]] = True
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------

def validate(path_or_bytes: Any, *, max_per_code: int | None = DEFAULT_MAX_PER_CODE) -> list[Finding]:
    """Check a whole ``.iid`` file and return every problem found.

    :param path_or_bytes: a path, or the file's bytes (``bytes``,
        ``bytearray``, ``memoryview``).
    :param max_per_code: keep at most this many findings of each code (the
        rest are counted in one extra finding of that code); ``None`` keeps all.
    :returns: the findings in the order of the walk (header, sections, LUT,
        entries, metadata, groups, indexes); empty for a sound file.  Never
        raises for a bad file; an unreadable path gives one ``IID000`` finding.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return _Validator(memoryview(path_or_bytes).cast("B"), max_per_code).run()
    from .source import MmapSource

    try:
        source = MmapSource(path_or_bytes)
    except OSError as exc:
        return [Finding("IID000", ERROR, "file", None, f"cannot read {os.fspath(path_or_bytes)!r}: {exc.strerror or exc}")]
    try:
        return _Validator(source.buffer(), max_per_code).run()
    finally:
        source.close()


def summarise(results: dict[str, list[Finding]]) -> dict[str, int]:
    """Counts over many files: files, files with errors, errors, warnings."""
    errors = sum(1 for fs in results.values() for f in fs if f.is_error)
    warnings = sum(1 for fs in results.values() for f in fs if not f.is_error)
    bad = sum(1 for fs in results.values() if any(f.is_error for f in fs))
    return {"files": len(results), "files_with_errors": bad, "errors": errors, "warnings": warnings}


class _ValidateOne:
    """One file's validation, as a picklable callable for Dask workers."""

    def __init__(self, max_per_code: int | None, errors_only: bool):
        self.max_per_code = max_per_code
        self.errors_only = errors_only

    def __call__(self, path: str) -> list[Finding]:
        findings = validate(path, max_per_code=self.max_per_code)
        return [f for f in findings if f.is_error] if self.errors_only else findings


def _validate_on_scheduler(args: argparse.Namespace, check: _ValidateOne, quiet: bool) -> dict[str, list[Finding]]:
    """Validate ``args.files`` with :func:`iidschema.batch.map_files` (threads,
    processes or a Dask cluster); a file whose check itself failed is reported
    as ``IID000``."""
    from .batch import map_files

    batch = map_files(check, args.files, args.scheduler, args.workers, progress=not quiet)
    return {
        item.item: item.value if item.ok else [Finding("IID000", ERROR, "file", None, f"validation failed: {item.error}")]
        for item in batch
    }


def cmd_validate(args: argparse.Namespace) -> int:
    """``iidschema validate FILE...``: exit 1 when any file has an error."""
    from tqdm import tqdm

    limit = None if args.max_per_code == 0 else args.max_per_code
    check = _ValidateOne(limit, args.errors_only)
    results: dict[str, list[Finding]] = {}
    quiet = args.quiet or not sys.stderr.isatty()
    out = sys.stdout
    if getattr(args, "scheduler", "sync") not in (None, "sync"):
        results = _validate_on_scheduler(args, check, quiet)
        if not args.json:
            for path, findings in results.items():
                for f in findings:
                    print(f"{path}: {f}", file=out)
    else:
        bar = tqdm(args.files, desc="validating", unit="file", file=sys.stderr, disable=quiet, leave=False)
        for path in bar:
            findings = results[path] = check(path)
            if not args.json:
                for f in findings:
                    line = f"{path}: {f}"
                    if bar.disable:
                        print(line, file=out)
                    else:
                        bar.write(line, file=out)
        bar.close()
    summary = summarise(results)
    if args.json:
        json.dump(
            {
                "files": [
                    {
                        "file": path,
                        "ok": not any(f.is_error for f in fs),
                        "errors": sum(f.is_error for f in fs),
                        "warnings": sum(not f.is_error for f in fs),
                        "findings": [f.to_dict() for f in fs],
                    }
                    for path, fs in results.items()
                ],
                "summary": summary,
            },
            out,
            indent=1,
        )
        print(file=out)
    else:
        ok = summary["files"] - summary["files_with_errors"]
        print(
            f"checked {summary['files']} file{'s' if summary['files'] != 1 else ''}: {ok} ok, "
            f"{summary['files_with_errors']} with errors; {summary['errors']} errors, {summary['warnings']} warnings",
            file=out,
        )
    return 1 if summary["files_with_errors"] else 0


def add_validate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``validate`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "validate",
        help="check files against the format and report every problem (codes in docs/CONFORMANCE.md)",
        description="Walk each file completely and report every problem found: severity, code (IID001...), "
        "section, byte offset and explanation. Exit status 1 when any file has an error.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (it is also off when stderr is not a terminal)")
    p.add_argument("--errors-only", action="store_true", help="do not list warnings")
    p.add_argument("--max-per-code", type=int, default=DEFAULT_MAX_PER_CODE, metavar="N",
                   help=f"list at most N findings of each code per file, count the rest (default {DEFAULT_MAX_PER_CODE}; 0: all)")
    add_batch_arguments(p)
    p.set_defaults(func=cmd_validate)
    return p
