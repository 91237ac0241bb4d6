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
trailing bytes.  Version 2 is walked the same way through the contents of
its compressed sections: every block table row, block CRC and decoded block
size first, then the columnar LUT (chunk bases, payload lengths, bboxes),
every IID record and mask payload, groups and indexes with the checks of
version 1 (:class:`_View` lets one check read a plain section or a blocked
section's content).

Each problem is a :class:`Finding` with a severity (``"error"``: the file
does not follow the format or a reader will refuse part of it;
``"warning"``: legal but suspicious, e.g. unreferenced bytes), a stable code
(``IID001`` ...; the full list is :data:`CODES` and ``docs/CONFORMANCE.md``),
the section, the absolute byte offset (version 2: of the stored block holding
a content byte, the content offset in the message) and a one-line
explanation.

Guarantees (tested by ``tests/test_fuzz.py``): a file with no error reads
completely with :class:`~iidschema.IIDFile` (every entry, mask, group, the
metadata, spatial and address queries); a file the reader refuses has at
least one error.  ``validate`` itself never raises on a bad file, and never
allocates a mask larger than :data:`iidschema.masks.MAX_MASK_PIXELS` (an
oversize claim is reported as ``IID051``), nor reads more content of a
version-2 section at once (``IID109``): decompressed blocks are bounded by
``MAX_BLOCK_SIZE2`` each and a small cache in all.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from . import masks as _masks
from . import schema
from .batch import add_batch_arguments  # light: Dask is imported only when a batch runs
from .blocked import BlockError, _Cache, decode_block
from .errors import IIDCodecError, IIDError, IIDFormatError
from .reader2 import PAYLOAD_SLACK

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
    "IID003": (ERROR, "versions 1 and 2: bad magic number"),
    "IID004": (ERROR, "versions 1 and 2: header checksum (header_crc) mismatch"),
    "IID005": (ERROR, "versions 1 and 2: more than 64 sections, or the section table runs past the end of the file"),
    "IID006": (WARNING, "a reserved field or flag bit is not zero (version-1 and -2 header flags, section flag bits 1-15, region flags, block-table reserved field)"),
    # sections
    "IID010": (ERROR, "a section runs past the end of the file"),
    "IID011": (ERROR, "a section overlaps the header or another section (version 0: or is out of order)"),
    "IID012": (ERROR, "versions 1 and 2: a section id is listed twice"),
    "IID013": (WARNING, "bytes between sections that belong to no section (versions 1 and 2: more than 7 bytes of alignment padding, or non-zero padding)"),
    "IID014": (WARNING, "trailing bytes after the last section"),
    "IID015": (ERROR, "versions 1 and 2: a mandatory section (lut, iids, meta, groups, segs) is missing"),
    "IID016": (ERROR, "versions 1 and 2: an unknown section is marked REQUIRED (version 2: block_crcs is unknown)"),
    "IID017": (WARNING, "versions 1 and 2: an unknown optional section (readers skip it; version 2: block_crcs is unknown)"),
    "IID018": (ERROR, "version 1: section checksum mismatch; version 2: checksum mismatch of a plain section (meta, codecs)"),
    # LUT
    "IID020": (ERROR, "the LUT length does not match its entries (version 0: multiple of 20; version 1: 64 * count + block CRCs; version 2: content of schema.lut2_size(count) bytes)"),
    "IID021": (ERROR, "version 0: a LUT row's key is not its index"),
    "IID022": (ERROR, "a LUT row locates its IID record outside the iids section (version 2: its content)"),
    "IID023": (ERROR, "a LUT row locates its segment record (version 2: mask payload) outside the segs section (version 2: its content)"),
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
    "IID054": (ERROR, "versions 1 and 2: the codecs section is malformed or lists a codec id no installed codec has"),
    "IID055": (WARNING, "versions 1 and 2: a region (version 2: a LUT row with a payload) uses a codec id the codecs section does not list"),
    # meta and groups
    "IID060": (ERROR, "the metadata is not valid UTF-8 JSON (including JSON nested too deeply to parse)"),
    "IID061": (ERROR, "the groups section is shorter than its JSON length prefix says"),
    "IID062": (ERROR, "the group table is not a JSON list of {name: str, offset: int >= 0, length: int >= 0}"),
    "IID063": (ERROR, "a group name is listed twice"),
    "IID064": (ERROR, "a group's key list lies outside the group data or is not a multiple of 4 bytes"),
    "IID065": (ERROR, "a group holds a key not below the entry count"),
    "IID066": (WARNING, "a group lists a key twice (versions 1 and 2: or not in ascending order)"),
    "IID067": (WARNING, "bytes of the group data referenced by no group"),
    # block CRCs
    "IID070": (ERROR, "version 1: the block_crcs section is malformed, or a table does not match its section's size"),
    "IID071": (ERROR, "version 1: block checksum mismatch in a section with a block CRC table"),
    "IID072": (WARNING, "version 1: a block CRC table for a section the file does not have, or a second table for one section"),
    # indexes
    "IID080": (ERROR, "versions 1 and 2: the spatial index is malformed (queries raise)"),
    "IID081": (ERROR, "versions 1 and 2: the spatial index disagrees with the LUT (missing, extra or misplaced entries)"),
    "IID082": (ERROR, "versions 1 and 2: the address index is malformed (lookups raise)"),
    "IID083": (ERROR, "versions 1 and 2: the address index disagrees with the IID records"),
    # version 2: blocked sections and the columnar LUT
    "IID100": (ERROR, "version 2: a blocked section is shorter than its 20-byte head (raw_length block_size compression shuffle count)"),
    "IID101": (ERROR, "version 2: a blocked section's head checksum mismatch (the header's section CRC of a blocked section covers its 20-byte head only)"),
    "IID102": (ERROR, "version 2: a blocked section's block_size is not in 1..MAX_BLOCK_SIZE2 (16 MiB), or its block count is not ceil(raw_length / block_size) (its content is not checked)"),
    "IID103": (ERROR, "version 2: a blocked section's compression is not 0 (stored) or 1 (zstd) (its blocks are not decoded)"),
    "IID104": (ERROR, "version 2: a blocked section's block table (20 + 16 * count bytes) runs past the section's end, or bytes follow an empty table"),
    "IID105": (ERROR, "version 2: a block table row is invalid: its block lies outside the section after the table, or blocks do not lie back to back from the table's end to the section's end"),
    "IID106": (ERROR, "version 2: block checksum mismatch (CRC32C of the stored block, from its table row)"),
    "IID107": (ERROR, "version 2: a block does not decode to exactly its content size (min(block_size, the content left)): not one valid zstd frame of that size, or a stored block of another length"),
    "IID108": (WARNING, "version 2: a blocked section's shuffle element size (>= 2) does not divide its block size (legal: the tail of each block is left unshuffled, but writers never do it; a damaged shuffle field garbles the content)"),
    "IID109": (ERROR, "version 2: content to check at once (a whole LUT, or one read of a section's content: an IID record, a group table, an index table) is larger than iidschema.masks.MAX_MASK_PIXELS bytes (not checked; raise the limit if you trust the file)"),
    "IID110": (ERROR, "version 2: the LUT's block size is not schema.LUT_CHUNK2_SIZE (one chunk of 1024 entries per block)"),
    "IID111": (ERROR, "version 2: a LUT chunk's iid_base or seg_base is not where the records of the earlier entries end (records lie back to back in key order from content offset 0)"),
    "IID112": (ERROR, "version 2: a LUT entry's bbox reaches past the largest coordinate (minr + height or minc + width > 2**32 - 1)"),
    "IID113": (ERROR, "version 2: a LUT entry's seg_length exceeds its bbox's pixels plus reader2.PAYLOAD_SLACK (64) bytes, or is not 0 for an empty bbox (readers refuse it)"),
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


_BLOCKED_HEAD_FIELDS = _field_offsets(schema.BlockedHead2)
_BLOCK_REF_SIZE = schema.BLOCK_REF2_DTYPE.itemsize
#: Decompressed blocks kept while a version-2 file is checked (bytes): the
#: records of iids and segs are read in key order, so a small cache
#: decompresses each block about once.
_CACHE_BYTES = 64 << 20
#: Record offsets are computed saturated at this bound: a content of more
#: bytes would need a block table of gigabytes, and int64 sums of 1025 such
#: values cannot overflow.
_MAX_CONTENT = 1 << 52


class _Region(NamedTuple):
    """A mask payload to decode: ``at`` its file offset, ``note`` where it
    lies in its section's content (version 2; empty for a plain section)."""

    at: int
    bbox: tuple[int, int, int, int]
    codec: int
    payload: Any
    note: str = ""


class _View:
    """The bytes of one section as the checks shared by all versions read
    them: offsets count from the section's first byte (of its content, for
    a blocked section), and :meth:`at` / :meth:`note` turn one into where a
    finding points.  So the group, record and index checks are written once
    for plain and blocked sections."""

    name: str
    size: int

    def read(self, o: int, n: int) -> Any:
        """Bytes ``[o, o + n)``; outside the section: IIDFormatError at ``o``."""
        raise NotImplementedError

    def at(self, o: int) -> int:
        """The file offset a finding about byte ``o`` points at."""
        raise NotImplementedError

    def note(self, o: int) -> str:
        """What a finding's message adds about byte ``o`` (its content offset)."""
        return ""

    def check_range(self, o: int, n: int) -> None:
        if o < 0 or n < 0 or o + n > self.size:
            raise IIDFormatError(f"read [{o}, {o + n}) outside the {self.size} bytes of {self.name!r}", offset=o)


class _Plain(_View):
    """A section stored as it is (every section of versions 0 and 1; meta
    and codecs of version 2): reads are slices of the file, no copy."""

    def __init__(self, buf: memoryview, name: str, offset: int, size: int):
        self.buf, self.name, self.offset, self.size = buf, name, offset, size

    def read(self, o: int, n: int) -> memoryview:
        self.check_range(o, n)
        return self.buf[self.offset + o : self.offset + o + n]

    def at(self, o: int) -> int:
        return self.offset + o


class _Blocked(_View):
    """The content of a version-2 blocked section, read block by block.

    Built by :meth:`_Validator.open_blocked` once the head and table are
    checked; ``usable[b]`` says whether block ``b`` passed its checks (row,
    CRC, decoded size).  Reads decompress the blocks they span (through the
    validator's cache) and stop the current check (:class:`_Stop`) when one
    is unusable (already reported) or when the read is larger than
    :data:`iidschema.masks.MAX_MASK_PIXELS` (reported here as IID109): a
    small file must not make the checker allocate without bound."""

    def __init__(self, validator: "_Validator", sid: int, offset: int, head: tuple[int, int, int, int, int],
                 starts: np.ndarray, sizes: np.ndarray, crcs: np.ndarray, inside: np.ndarray):
        self.validator, self.sid, self.name, self.offset = validator, sid, schema.SectionId.NAMES[sid], offset
        self.size, self.block_size, self.compression, self.shuffle, self.count = head
        self.starts, self.sizes, self.crcs, self.inside = starts, sizes, crcs, inside
        self.usable = np.zeros(self.count, dtype=bool)

    def raw_size(self, b: int) -> int:
        """Content bytes of block ``b`` (the last may be short)."""
        return min(self.block_size, self.size - b * self.block_size)

    def block_of(self, o: int) -> int:
        return min(max(o, 0) // self.block_size, max(self.count - 1, 0))

    def at(self, o: int) -> int:
        b = self.block_of(o)
        return self.offset + (int(self.starts[b]) if self.count and self.inside[b] else 0)

    def note(self, o: int) -> str:
        return f" [content offset {o}, block {self.block_of(o)}]"

    def stored(self, b: int) -> memoryview:
        start = self.offset + int(self.starts[b])
        return self.validator.buf[start : start + int(self.sizes[b])]

    def block(self, b: int) -> bytes:
        """Block ``b`` decompressed (a block that failed its checks: :class:`_Stop`)."""
        if not self.usable[b]:
            raise _Stop
        cache = self.validator.cache
        data = cache.get((self.sid, b))
        if data is None:
            data = decode_block(self.stored(b), self.compression, self.shuffle, self.raw_size(b))
            cache.put((self.sid, b), data)
        return data

    def read(self, o: int, n: int) -> bytes:
        self.check_range(o, n)
        limit = _masks.MAX_MASK_PIXELS
        if n > limit:
            self.validator.add("IID109", self.name, self.at(o), f"a read of {n} content bytes exceeds MAX_MASK_PIXELS ({limit}); "
                               f"not checked{self.note(o)}")
            raise _Stop
        if n == 0:
            return b""
        first, last = o // self.block_size, (o + n - 1) // self.block_size
        data = b"".join(self.block(b) for b in range(first, last + 1))
        start = o - first * self.block_size
        return data[start : start + n]


def _chunk_spans(bases: np.ndarray, lengths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (int64) of each version-2 record: its chunk's base plus
    the lengths of the chunk's entries before it.

    Exact for every record that ends inside a content of ``size`` bytes;
    values past it saturate (still past it), so a hostile base or length
    cannot wrap around into the content as uint64 sums would."""
    cap = _saturation(size)
    n = lengths.size
    chunk = schema.LUT_CHUNK2
    padded = np.zeros(-(-n // chunk) * chunk, dtype=np.int64)
    padded[:n] = np.minimum(lengths, np.uint64(cap)).astype(np.int64)
    ends = np.cumsum(padded.reshape(-1, chunk), axis=1)
    ends += np.minimum(bases, np.uint64(cap)).astype(np.int64)[:, None]
    ends = ends.reshape(-1)[:n]
    return ends - padded[:n], ends


def _content_limit(size: int) -> int:
    """The end a version-2 record must not pass in a content of ``size``
    bytes (a content past :data:`_MAX_CONTENT` is not addressed beyond it)."""
    return min(size, _MAX_CONTENT)


def _saturation(size: int) -> int:
    """The bound record offsets saturate at (just past every valid end)."""
    return _content_limit(size) + 1


def _lut_row(lut: _Blocked, key: int) -> tuple[int, str]:
    """Where a finding about version-2 LUT row ``key`` points, and the note
    for its message: its chunk's block (a row's fields are spread over the
    chunk's byte-planar columns, so no single byte is the row)."""
    c = key // schema.LUT_CHUNK2
    o = c * schema.LUT_CHUNK2_SIZE
    return lut.at(o), f" [LUT chunk {c} at content offset {o}, block {c}]"




def _section_name(version: int, sid: int) -> str | None:
    """The name of section ``sid`` in ``version`` (None: unknown to it)."""
    if version >= 2 and sid == schema.SectionId.BLOCK_CRCS:
        return None  # version 2 checks every blocked section per block instead
    return schema.SectionId.NAMES.get(sid)


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
        self.address_hashes: dict[int, int] = {}  # key -> hash of its address, when the file has an address index
        self._codecs: dict[int, Any] = {}
        self.boxes: np.ndarray | None = None  # versions 1 and 2: LUT bboxes (n, 4)
        self.cache = _Cache(_CACHE_BYTES)  # version 2: decompressed blocks

    # -- reporting ----------------------------------------------------------

    def add(self, code: str, section: str | None, offset: int | None, message: str) -> None:
        n = self.counts.get(code, 0) + 1
        self.counts[code] = n
        if self.max_per_code is None or n <= self.max_per_code:
            self.findings.append(Finding(code, CODES[code][0], section, None if offset is None else int(offset), message))

    def add_in(self, code: str, view: _View, o: int, message: str) -> None:
        """Report a finding about byte ``o`` of ``view``: at its file offset,
        the content offset (version 2) in the message."""
        self.add(code, view.name, view.at(o), message + view.note(o))

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
        walk = {0: self.walk_v0, 1: self.walk_v1, 2: self.walk_v2}.get(version)
        if walk is None:
            self.add("IID002", "header", 0, f"format version {version} is not one of {', '.join(map(str, schema.SUPPORTED_VERSIONS))}")
        else:
            self.guard("file", 0, walk)
        return self.result()

    # -- shared pieces ------------------------------------------------------

    def in_bounds(self, off: int, length: int) -> bool:
        return 0 <= off and 0 <= length and off + length <= self.size

    def plain_views(self) -> dict[str, _View | None]:
        """Every usable section as it is stored (versions 0 and 1)."""
        return {name: _Plain(self.buf, name, off, length) for name, (off, length) in self.sections.items()}

    def check_gaps(self, spans: list[tuple[int, int, str]], start: int, align: int) -> None:
        """Warn about bytes in no section (``spans`` in bounds, any order).

        ``align``: gaps shorter than this made only of zero bytes are
        alignment padding (versions 1 and 2) and not reported."""
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

    def record_coverage(self, view: _View, rel: np.ndarray, length: np.ndarray, ok: np.ndarray) -> None:
        """Warn about overlapping records and unreferenced bytes of ``view``."""
        size = view.size
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
                self.add_in("IID026", view, int(r[i + 1]), f"record at +{int(r[i + 1])} overlaps an earlier record ending at +{int(prev_end[i])}")
        covered = 0
        if r.size:
            # total bytes covered by the union of the records
            starts = r
            cum_end = np.maximum.accumulate(ends)
            prev = np.concatenate(([0], cum_end[:-1]))
            covered = int(np.sum(np.maximum(0, ends - np.maximum(starts, prev)) * (ends > prev)))
        if covered < size:
            self.add_in("IID027", view, 0, f"{size - covered} of the section's {size} bytes belong to no record")

    def iid_record(self, key: int, view: _View, rel: int, length: int) -> None:
        """One IID record (the same layout in every version), and the hash
        of its address when the address index is to be checked."""
        head = schema.IID_HEAD0
        if length < head.size:
            self.add_in("IID030", view, rel, f"IID record of entry {key} is {length} bytes, shorter than its {head.size}-byte head")
            return
        data = view.read(rel, length)
        k, dlen, alen = head.unpack_from(data, 0)
        if k != key:
            self.add_in("IID031", view, rel, f"IID record of entry {key} holds key {k}")
        if head.size + dlen + alen != length:
            self.add_in("IID032", view, rel, f"IID record of entry {key}: {head.size} + domain {dlen} + address {alen} bytes != record length {length}")
            return
        if "address_index" in self.sections:
            from .index.address import address_hash

            self.address_hashes[key] = address_hash(data[head.size + dlen : length])

    def codec(self, cid: int) -> Any:
        if cid not in self._codecs:
            from .codecs import get_codec

            try:
                self._codecs[cid] = get_codec(cid)
            except IIDCodecError:
                self._codecs[cid] = None
        return self._codecs[cid]

    def decode_region(self, key: int, region: _Region) -> np.ndarray | None:
        """The region's mask, or None (after reporting why not)."""
        at, bbox, cid, payload, note = region
        h, w = bbox[2] - bbox[0], bbox[3] - bbox[1]
        if h * w > _masks.MAX_MASK_PIXELS:
            self.add("IID051", "segs", at, f"entry {key}: region {bbox} of {h} x {w} pixels exceeds MAX_MASK_PIXELS ({_masks.MAX_MASK_PIXELS}); not decoded{note}")
            return None
        codec = self.codec(cid)
        if codec is None:
            self.add("IID048", "segs", at, f"entry {key}: region {bbox} uses codec id {cid}, which no installed codec has{note}")
            return None
        try:
            mask = codec.decode(payload, (h, w))
        except IIDError as exc:
            self.add("IID049", "segs", at, f"entry {key}: region {bbox} ({getattr(codec, 'name', cid)}): {exc}{note}")
            return None
        except Exception as exc:  # noqa: BLE001 - a codec bug, reported as a finding
            self.add("IID049", "segs", at, f"entry {key}: region {bbox}: codec {getattr(codec, 'name', cid)!r} crashed with {type(exc).__name__}: {exc}{note}")
            return None
        mask = np.asarray(mask)
        if mask.shape != (h, w) or mask.dtype != np.bool_:
            self.add("IID049", "segs", at, f"entry {key}: region {bbox} decoded to {mask.dtype} {mask.shape}, expected bool {(h, w)}{note}")
            return None
        if cid == 0 and (h * w) % 8:
            last = memoryview(payload)[-1] if len(payload) else 0
            if last & ((1 << (8 - (h * w) % 8)) - 1):
                self.add("IID052", "segs", at, f"entry {key}: region {bbox}: padding bits of the last payload byte are not zero{note}")
        return mask

    def check_area(self, key: int, at: int, section: str, bbox: tuple[int, int, int, int], area: int,
                   regions: list[_Region], complete: bool, note: str = "") -> None:
        """Decode every region (one at a time) and compare ``area`` with the
        pixels of their OR.  ``at``, ``section`` and ``note`` locate the
        segment's findings (its head, or its LUT row).

        Memory stays within one region mask plus, only for regions whose
        bboxes overlap, one canvas of their union bbox (inside the segment
        bbox, so within MAX_MASK_PIXELS): never every region mask at once,
        never a canvas of the whole segment for disjoint regions."""
        h, w = bbox[2] - bbox[0], bbox[3] - bbox[1]
        too_big = h * w > _masks.MAX_MASK_PIXELS
        if too_big:
            self.add("IID051", section, at, f"entry {key}: segment bbox {bbox} of {h} x {w} pixels exceeds MAX_MASK_PIXELS ({_masks.MAX_MASK_PIXELS}); its mask cannot be composed{note}")
        shared = _overlapping([r.bbox for r in regions]) if len(regions) > 1 else np.zeros(len(regions), bool)
        canvas = None
        if shared.any() and not too_big:
            sb = np.asarray([r.bbox for r, s in zip(regions, shared) if s], dtype=np.int64)
            c0 = (int(sb[:, 0].min()), int(sb[:, 1].min()))
            canvas = np.zeros((int(sb[:, 2].max()) - c0[0], int(sb[:, 3].max()) - c0[1]), dtype=bool)
        disjoint = 0
        total = 0
        for region, s in zip(regions, shared):
            mask = self.decode_region(key, region)
            if mask is None:
                complete = False
                continue
            n = int(np.count_nonzero(mask))
            total += n
            if not s:
                disjoint += n
            elif canvas is not None:
                rbox = region.bbox
                canvas[rbox[0] - c0[0] : rbox[2] - c0[0], rbox[1] - c0[1] : rbox[3] - c0[1]] |= mask
            del mask
        if not complete or too_big:
            return
        union = disjoint + (int(np.count_nonzero(canvas)) if canvas is not None else 0)
        if union != total:
            self.add("IID053", "segs", at, f"entry {key}: its regions share {total - union} pixels{note}")
        if union != area:
            self.add("IID050", section, at, f"entry {key}: area is {area}, its decoded mask has {union} pixels{note}")

    def groups(self, view: _View, version: int) -> None:
        length = view.size
        hs = _GROUPS_LEN.size
        if length < hs:
            self.add_in("IID061", view, 0, f"groups section is {length} bytes, shorter than its {hs}-byte JSON length")
            return
        (json_len,) = _GROUPS_LEN.unpack_from(view.read(0, hs), 0)
        if json_len > length - hs:
            self.add_in("IID061", view, 0, f"group table JSON length {json_len} runs past the end of the {length}-byte section")
            return
        try:
            table = schema.Json().parse(bytes(view.read(hs, json_len)))
        except IIDFormatError as exc:
            self.add_in("IID062", view, hs, f"group table: {exc.message}")
            return
        except RecursionError:
            self.add_in("IID062", view, hs, "group table: JSON nested too deeply to parse")
            return
        if not isinstance(table, list):
            self.add_in("IID062", view, hs, f"group table is a JSON {type(table).__name__}, not a list")
            return
        data_off = hs + json_len
        data_len = length - hs - json_len
        seen: set[str] = set()
        used = np.zeros(data_len, dtype=bool) if data_len <= 1 << 26 else None
        for i, item in enumerate(table):
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and all(type(item.get(f)) is int and item[f] >= 0 for f in ("offset", "length"))
            ):
                self.add_in("IID062", view, hs, f"group table item {i} is malformed: {_short(item)}")
                continue
            name, g_off, g_len = item["name"], item["offset"], item["length"]
            if name in seen:
                self.add_in("IID063", view, hs, f"group {name!r} is listed twice")
            seen.add(name)
            if g_len % 4 or g_off + g_len > data_len:
                self.add_in("IID064", view, data_off + min(g_off, data_len),
                            f"group {name!r}: keys [{g_off}, {g_off + g_len}) do not fit the {data_len}-byte group data or are not a multiple of 4 bytes")
                continue
            if used is not None:
                used[g_off : g_off + g_len] = True
            at = data_off + g_off
            keys = np.frombuffer(view.read(at, g_len), dtype=schema.GROUP_KEY0_DTYPE, count=g_len // 4).astype(np.int64)
            if keys.size and int(keys.max()) >= self.count:
                bad = int(np.count_nonzero(keys >= self.count))
                self.add_in("IID065", view, at, f"group {name!r}: {bad} keys not below the entry count {self.count} (largest {int(keys.max())})")
            if keys.size > 1:
                if np.unique(keys).size != keys.size:
                    self.add_in("IID066", view, at, f"group {name!r} lists {keys.size - np.unique(keys).size} keys twice")
                elif version >= 1 and not (np.diff(keys) > 0).all():
                    self.add_in("IID066", view, at, f"group {name!r}: keys are not in ascending order")
        if used is not None and data_len and not used.all():
            self.add_in("IID067", view, data_off, f"{int(np.count_nonzero(~used))} of the {data_len} group data bytes belong to no group")

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

        views = self.plain_views()
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
            self.guard("lut", self.sections["lut"][0], lambda: self.entries_v0(rows, views))
        if "meta" in self.sections:
            self.guard("meta", self.sections["meta"][0], lambda: self.meta(*self.sections["meta"]))
        if "groups" in views:
            self.guard("groups", self.sections["groups"][0], lambda: self.groups(views["groups"], version=0))

    def entries_v0(self, rows: np.ndarray, views: dict[str, _View | None]) -> None:
        lut_off = self.sections["lut"][0]
        n = rows.size
        keys = np.arange(n, dtype=np.int64)
        for i in np.flatnonzero(rows["key"].astype(np.int64) != keys).tolist():
            self.add("IID021", "lut", lut_off + i * schema.LUT0_ROW, f"LUT row {i} holds key {int(rows['key'][i])}")
        loc = {}
        for kind, section, code in (("iid", "iids", "IID022"), ("seg", "segs", "IID023")):
            rel = rows[kind]["offset"].astype(np.int64)
            length = rows[kind]["length"].astype(np.int64)
            view = views.get(section)
            if view is None:
                loc[kind] = None
                continue
            size = view.size
            ok = rel + length <= size
            for i in np.flatnonzero(~ok).tolist():
                self.add(code, "lut", lut_off + i * schema.LUT0_ROW,
                         f"LUT row {i}: {kind} record [{int(rel[i])}, {int(rel[i] + length[i])}) lies outside the {section} section ({size} bytes)")
            self.record_coverage(view, rel, length, ok)
            loc[kind] = (rel, length, ok)
        for key in range(n):
            if loc["iid"] is not None and loc["iid"][2][key]:
                rel, length = int(loc["iid"][0][key]), int(loc["iid"][1][key])
                iids = views["iids"]
                self.guard("iids", iids.at(rel), lambda: self.iid_record(key, iids, rel, length))
            if loc["seg"] is not None and loc["seg"][2][key]:
                off, length = views["segs"].at(int(loc["seg"][0][key])), int(loc["seg"][1][key])
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
                regions.append(_Region(p, rbox, 0, buf[p + rhead.size : p + rlen]))
            else:
                complete = False
            p += rlen
        if not inverted:
            self.check_area(key, off, "segs", bbox, area, regions, complete)

    # -- versions 1 and 2: header and section table ---------------------------

    def section_table(self, version: int) -> int | None:
        """Check the header and section table (one layout in versions 1 and
        2) and keep every usable known section in :attr:`sections`; return
        the entry count (None: the file is too short for a header)."""
        size, buf = self.size, self.buf
        fixed = schema.HEADER1_FIXED_SIZE
        if size < fixed:
            self.add("IID001", "header", 0, f"file is {size} bytes, shorter than the {fixed}-byte fixed version-{version} header")
            return None
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
        for i in range(walk):
            at = fixed + i * entry_size
            sid, sflags, crc = int(table["id"][i]), int(table["flags"][i]), int(table["crc"][i])
            off, length = int(table["offset"][i]), int(table["length"][i])
            name = _section_name(version, sid)
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
                gone = f" (version {version} has no {schema.SectionId.NAMES[sid]} section)" if sid in schema.SectionId.NAMES else ""
                if sflags & schema.SECTION_REQUIRED:
                    self.add("IID016", "header", at, f"section id {sid} is marked REQUIRED but is not known to this version of the format{gone}")
                else:
                    self.add("IID017", "header", at, f"unknown optional section id {sid} ({length} bytes) is skipped by readers{gone}")
            if inside:
                spans.append((off, length, label))
                self.section_crc(version, name, label, off, length, crc)
                if name is not None and name not in self.sections and off >= hend:
                    self.sections[name] = (off, length)
        ordered = sorted(spans)
        for (o1, n1, a), (o2, _, b) in zip(ordered, ordered[1:]):
            if o1 + n1 > o2:
                self.add("IID011", b, o2, f"{b} at {o2} overlaps {a} [{o1}, {o1 + n1})")
        for sid in schema.SectionId.MANDATORY:
            name = schema.SectionId.NAMES[sid]
            if sid not in seen:
                self.add("IID015", "header", fixed, f"mandatory section {name!r} (id {sid}) is missing")
        self.check_gaps(spans, hend, align=8)
        return count

    def section_crc(self, version: int, name: str | None, label: str, off: int, length: int, crc: int) -> None:
        """Check a section's CRC from the header: of its bytes (version 1,
        and the plain sections of version 2), of its 20-byte head (blocked
        sections of version 2; a shorter one is reported when it is opened).
        Unknown version-2 sections are not checked: the format does not say
        which of the two their CRC covers, and readers skip them."""
        if version >= 2 and name is None:
            return
        if version >= 2 and schema.SectionId.IDS[name] in schema.BLOCKED_SECTIONS2:
            head = schema.BLOCKED_HEAD2_SIZE
            if length >= head and _crc32c(self.buf[off : off + head]) != crc:
                self.add("IID101", label, off, f"{label}: checksum mismatch of the {head}-byte head (the head of the blocked section is damaged)")
        elif _crc32c(self.buf[off : off + length]) != crc:
            self.add("IID018", label, off, f"{label}: checksum mismatch (the section is damaged)")

    def listed_codecs(self) -> list[int] | None:
        """The codec ids of the codecs section, checked (None: no section, or unusable)."""
        if "codecs" not in self.sections:
            return None
        return self.guard("codecs", self.sections["codecs"][0], self.codecs_section)

    def common_sections(self, views: dict[str, _View | None], codec_list: list[int] | None, used_codecs: set[int],
                        version: int) -> None:
        """What versions 1 and 2 check alike once the entries are walked:
        codec ids against the codecs section, metadata, groups, indexes."""
        if codec_list is not None:
            for cid in sorted(used_codecs - set(codec_list)):
                self.add("IID055", "codecs", self.sections["codecs"][0], f"codec id {cid} is used by regions but not listed in the codecs section")
        if "meta" in self.sections:
            self.guard("meta", self.sections["meta"][0], lambda: self.meta(*self.sections["meta"]))
        checks: dict[str, Callable[[_View], None]] = {
            "groups": lambda view: self.groups(view, version),
            "spatial_index": self.spatial_index,
            "address_index": self.address_index,
        }
        for name, check in checks.items():
            view = views.get(name)
            if view is not None:
                self.guard(name, self.sections[name][0], lambda: check(view))

    # -- version 1 ----------------------------------------------------------

    def walk_v1(self) -> None:
        count = self.section_table(1)
        if count is None:
            return
        views = self.plain_views()
        codec_list = self.listed_codecs()
        if "block_crcs" in self.sections:
            self.guard("block_crcs", self.sections["block_crcs"][0], self.block_crcs)
        used_codecs: set[int] = set()
        if "lut" in self.sections:
            self.guard("lut", self.sections["lut"][0], lambda: self.entries_v1(count, views, used_codecs))
        self.common_sections(views, codec_list, used_codecs, version=1)
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

    def entries_v1(self, count: int, views: dict[str, _View | None], used_codecs: set[int]) -> None:
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
            view = views.get(section)
            if view is None:
                loc[kind] = None
                continue
            size = view.size
            rel = rows[kind]["offset"]
            length = rows[kind]["length"]
            ok = (rel <= np.uint64(size)) & (length <= np.uint64(size) - np.minimum(rel, np.uint64(size)))
            for i in np.flatnonzero(~ok).tolist():
                self.add(code, "lut", lut_off + i * row,
                         f"entry {i}: {kind} record [{int(rel[i])}, {int(rel[i]) + int(length[i])}) lies outside the {section} section ({size} bytes)")
            rel64 = np.where(ok, rel, 0).astype(np.int64)
            len64 = np.where(ok, length, 0).astype(np.int64)
            self.record_coverage(view, rel64, len64, ok)
            loc[kind] = (rel64, len64, ok)
        iids, segs = views.get("iids"), views.get("segs")
        for key in range(n):
            r = rows[key]
            if loc["iid"] is not None and loc["iid"][2][key]:
                rel, length = int(loc["iid"][0][key]), int(loc["iid"][1][key])
                off = iids.at(rel)
                if _crc32c(self.buf[off : off + length]) != int(r["iid_crc"]):
                    self.add("IID033", "iids", off, f"IID record of entry {key}: checksum mismatch")
                self.guard("iids", off, lambda: self.iid_record(key, iids, rel, length))
            if loc["seg"] is not None and loc["seg"][2][key]:
                off, length = segs.at(int(loc["seg"][0][key])), int(loc["seg"][1][key])
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
                regions.append(_Region(p, rbox, cid, buf[q : q + plen]))
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

    # -- version 2 ----------------------------------------------------------

    def walk_v2(self) -> None:
        count = self.section_table(2)
        if count is None:
            return
        views = self.views_v2()
        codec_list = self.listed_codecs()
        used_codecs: set[int] = set()
        if views.get("lut") is not None:
            self.guard("lut", self.sections["lut"][0], lambda: self.entries_v2(count, views, used_codecs))
        self.common_sections(views, codec_list, used_codecs, version=2)

    def views_v2(self) -> dict[str, _View | None]:
        """Every usable section as its checks read it: meta and codecs as
        they are stored, the others opened as blocked sections (head, table
        and every block checked first; None when nothing of the content can
        be located)."""
        views: dict[str, _View | None] = {}
        for name, (off, length) in self.sections.items():
            sid = schema.SectionId.IDS[name]
            if sid in schema.BLOCKED_SECTIONS2:
                views[name] = self.guard(name, off, lambda: self.open_blocked(sid, off, length))
            else:
                views[name] = _Plain(self.buf, name, off, length)
        return views

    def open_blocked(self, sid: int, off: int, length: int) -> _Blocked | None:
        """A blocked section's content view, its head, block table and every
        block checked; None (reported) when the head or table does not say
        where the blocks are."""
        name = schema.SectionId.NAMES[sid]
        head_size = schema.BLOCKED_HEAD2_SIZE
        if length < head_size:
            self.add("IID100", name, off, f"{name}: {length} bytes, shorter than the {head_size}-byte head of a blocked section")
            return None
        head = schema.BLOCKED_HEAD2.unpack_from(self.buf, off)
        if not self.blocked_head(name, off, head):
            return None
        count = head[4]
        table_size = head_size + count * _BLOCK_REF_SIZE
        if table_size > length:
            self.add("IID104", name, off + _BLOCKED_HEAD_FIELDS["count"][0],
                     f"{name}: a table of {count} blocks needs {table_size} bytes, the section has {length}")
            return None
        if not count and length != table_size:
            self.add("IID104", name, off + table_size, f"{name}: {length - table_size} bytes after an empty block table")
        view = _Blocked(self, sid, off, head, *self.block_rows(name, off, length, count))
        self.check_blocks(view)
        return view

    def blocked_head(self, name: str, off: int, head: tuple[int, int, int, int, int]) -> bool:
        """Check a blocked section's head; False when its blocks cannot be
        located (block size or count wrong: nothing of the content is read)."""
        raw_length, block_size, compression, shuffle, count = head
        at = {field: off + pos for field, (pos, _) in _BLOCKED_HEAD_FIELDS.items()}
        if not 1 <= block_size <= schema.MAX_BLOCK_SIZE2:
            self.add("IID102", name, at["block_size"], f"{name}: block size {block_size} is not in 1..{schema.MAX_BLOCK_SIZE2}")
            return False
        need = -(-raw_length // block_size)
        if count != need:
            self.add("IID102", name, at["count"],
                     f"{name}: {raw_length} content bytes in blocks of {block_size} need {need} blocks, the table has {count}")
            return False
        if compression not in schema.BLOCK_COMPRESSIONS:
            known = ", ".join(f"{k} {v}" for k, v in schema.BLOCK_COMPRESSIONS.items())
            self.add("IID103", name, at["compression"], f"{name}: unknown block compression {compression} ({known}); its blocks are not decoded")
        if shuffle > 1 and block_size % shuffle:
            self.add("IID108", name, at["shuffle"], f"{name}: shuffle element size {shuffle} does not divide the block size {block_size}")
        return True

    def block_rows(self, name: str, off: int, length: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Check every row of a block table: each block inside the section
        after the table, all back to back from the table's end to the
        section's end.  Returns the blocks' starts (relative to the section;
        0 for a block outside it), lengths and CRCs, and which blocks lie
        inside the section (those are checked further)."""
        head_size = schema.BLOCKED_HEAD2_SIZE
        table_size = head_size + count * _BLOCK_REF_SIZE
        rows = np.frombuffer(self.buf, dtype=schema.BLOCK_REF2_DTYPE, count=count, offset=off + head_size)
        stored, sizes = rows["offset"], rows["length"].astype(np.int64)
        end = np.uint64(length)
        inside = (stored >= np.uint64(table_size)) & (stored <= end) & (sizes.astype(np.uint64) <= end - np.minimum(stored, end))
        starts = np.where(inside, stored, 0).astype(np.int64)
        ends = starts + sizes
        expected = np.concatenate(([table_size], ends[:-1]))
        comparable = inside & np.concatenate(([True], inside[:-1]))
        row_at = off + head_size
        for b in np.flatnonzero(~inside).tolist():
            self.add("IID105", name, row_at + b * _BLOCK_REF_SIZE,
                     f"{name}: the table row of block {b} places it at +{int(stored[b])} ({int(sizes[b])} bytes), "
                     f"outside the section's blocks [+{table_size}, +{length})")
        for b in np.flatnonzero(comparable & (starts != expected)).tolist():
            after = "the block table" if b == 0 else f"block {b - 1}"
            self.add("IID105", name, row_at + b * _BLOCK_REF_SIZE,
                     f"{name}: block {b} starts at +{int(starts[b])}, not where {after} ends (+{int(expected[b])}): blocks lie back to back")
        if count and inside[-1] and ends[-1] != length:
            self.add("IID105", name, row_at + (count - 1) * _BLOCK_REF_SIZE,
                     f"{name}: the last block ends at +{int(ends[-1])}, the section at +{length}")
        return starts, sizes, rows["crc"].astype(np.int64), inside

    def check_blocks(self, view: _Blocked) -> None:
        """Every block inside its section: the CRC32C of its stored bytes,
        then decoded to exactly its content size (shuffle undone); sound ones
        are marked usable and kept in the cache for the content checks."""
        decodable = view.compression in schema.BLOCK_COMPRESSIONS
        for b in np.flatnonzero(view.inside).tolist():
            data = view.stored(b)
            at = view.offset + int(view.starts[b])
            lo = b * view.block_size
            where = f"{view.name}: block {b} (content [{lo}, {lo + view.raw_size(b)}))"
            if _crc32c(data) != int(view.crcs[b]):
                self.add("IID106", view.name, at, f"{where}: checksum mismatch (the stored block or its table row is damaged)")
                continue
            if not decodable:
                continue
            try:
                content = decode_block(data, view.compression, view.shuffle, view.raw_size(b))
            except BlockError as exc:
                self.add("IID107", view.name, at, f"{where}: {exc}")
                continue
            view.usable[b] = True
            self.cache.put((view.sid, b), content)

    def entries_v2(self, count: int, views: dict[str, _View | None], used_codecs: set[int]) -> None:
        """Every entry of version 2: its LUT row (bbox, payload length),
        where its records lie, its IID record, its mask against its area."""
        lut = views["lut"]
        assert isinstance(lut, _Blocked)
        decoded = self.lut_v2(lut, count)
        if decoded is None:
            return
        rows, bases, known = decoded
        minr, minc = rows["minr"].astype(np.int64), rows["minc"].astype(np.int64)
        boxes = np.stack([minr, minc, minr + rows["height"], minc + rows["width"]], axis=1)
        self.boxes = boxes if known.all() else None
        skip = self.lut_fields_v2(lut, rows, boxes, known)
        spans: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        for kind, section, code, column in (("iid", "iids", "IID022", 0), ("seg", "segs", "IID023", 1)):
            view = views.get(section)
            spans[kind] = None if view is None else self.record_spans_v2(lut, view, kind, code, rows[f"{kind}_length"],
                                                                          bases[:, column], known)
        iids, segs, iid_spans = views.get("iids"), views.get("segs"), spans["iid"]
        for key in np.flatnonzero(known).tolist():
            if iid_spans is not None and iid_spans[2][key]:
                rel, n = int(iid_spans[0][key]), int(iid_spans[1][key])
                self.guard("iids", iids.at(rel), lambda: self.iid_record(key, iids, rel, n))
            if not skip[key]:
                at, note = _lut_row(lut, key)
                box = tuple(boxes[key].tolist())
                self.guard("segs", at, lambda: self.segment_v2(key, rows[key], box, at, note, spans["seg"], segs, used_codecs))

    def lut_v2(self, lut: _Blocked, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The LUT rows (:data:`schema.LUT2_DTYPE`), each chunk's (iid_base,
        seg_base), and which rows are known (their chunk's block is sound);
        None (reported) when the LUT's size or block size is wrong or it is
        too large to hold."""
        expected = schema.lut2_size(count)
        if lut.size != expected:
            self.add("IID020", "lut", lut.offset, f"LUT content is {lut.size} bytes; {count} entries need {expected}")
            return None
        if count and lut.block_size != schema.LUT_CHUNK2_SIZE:
            self.add("IID110", "lut", lut.offset + _BLOCKED_HEAD_FIELDS["block_size"][0],
                     f"LUT blocks are {lut.block_size} bytes, not {schema.LUT_CHUNK2_SIZE} (one chunk of {schema.LUT_CHUNK2} entries)")
            return None
        if lut.size > _masks.MAX_MASK_PIXELS:
            self.add("IID109", "lut", lut.offset,
                     f"LUT content of {lut.size} bytes exceeds MAX_MASK_PIXELS ({_masks.MAX_MASK_PIXELS}); its entries are not checked")
            return None
        chunk = schema.LUT_CHUNK2
        rows = np.zeros(count, dtype=schema.LUT2_DTYPE)
        bases = np.zeros((lut.count, 2), dtype=np.uint64)
        known = np.zeros(count, dtype=bool)
        for c in np.flatnonzero(lut.usable).tolist():
            block = lut.block(c)
            lo, hi = c * chunk, min(count, (c + 1) * chunk)
            bases[c] = schema.LUT_CHUNK_HEAD2_FMT.unpack_from(block, 0)
            rows[lo:hi] = schema.planar_to_records(memoryview(block)[schema.LUT_CHUNK_HEAD2 :], hi - lo, schema.LUT2_DTYPE)
            known[lo:hi] = True
        return rows, bases, known

    def lut_fields_v2(self, lut: _Blocked, rows: np.ndarray, boxes: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Report the LUT rows a reader refuses before it reads their mask: a
        bbox past the largest coordinate (IID112), a payload longer than the
        bbox allows (IID113).  Returns the rows whose mask is not decoded."""
        over = known & ((boxes[:, 2] > schema.MAX_COORD_V1) | (boxes[:, 3] > schema.MAX_COORD_V1))
        for k in np.flatnonzero(over).tolist():
            at, note = _lut_row(lut, k)
            self.add("IID112", "lut", at, f"entry {k}: bbox {tuple(boxes[k].tolist())} reaches past the largest coordinate {schema.MAX_COORD_V1}{note}")
        pixels = rows["height"].astype(np.uint64) * rows["width"].astype(np.uint64)
        seg_len = rows["seg_length"]
        too_long = known & ((seg_len > pixels + np.uint64(PAYLOAD_SLACK)) | ((pixels == 0) & (seg_len != 0)))
        for k in np.flatnonzero(too_long).tolist():
            at, note = _lut_row(lut, k)
            allowed = "none for an empty bbox" if pixels[k] == 0 else f"at most {int(pixels[k]) + PAYLOAD_SLACK} bytes"
            self.add("IID113", "lut", at, f"entry {k}: a {int(seg_len[k])}-byte payload for a {int(rows['height'][k])} x "
                     f"{int(rows['width'][k])} bbox (readers allow {allowed}){note}")
        return over | too_long

    def record_spans_v2(self, lut: _Blocked, view: _View, kind: str, code: str, lengths: np.ndarray, bases: np.ndarray,
                        known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each entry's ``kind`` record lies in ``view``: (start,
        length, inside).  Reports records past the content (IID022/IID023),
        chunk bases that do not continue the records before them (IID111),
        overlapping records and unreferenced bytes (IID026/IID027)."""
        size = view.size
        start, end = _chunk_spans(bases, lengths, size)
        ok = known & (end <= _content_limit(size))
        for k in np.flatnonzero(known & ~ok).tolist():
            at, note = _lut_row(lut, k)
            self.add(code, "lut", at, f"entry {k}: its {int(lengths[k])}-byte {kind} record, after its chunk's base and the records "
                     f"before it, ends past the {size}-byte content of the {view.name} section{note}")
        self.chunk_bases(lut, kind, bases, end, known, size)
        length = end - start
        self.record_coverage(view, start, length, ok)
        return start, length, ok

    def chunk_bases(self, lut: _Blocked, kind: str, bases: np.ndarray, end: np.ndarray, known: np.ndarray, size: int) -> None:
        """Report chunks whose base is not where the records of the entries
        before them end (0 for the first): records lie back to back in key
        order.  ``end``: each record's end, saturated as by :func:`_chunk_spans`."""
        n = known.size
        if not n:
            return
        cap = _saturation(size)
        first = np.arange(0, n, schema.LUT_CHUNK2)
        prev_end = np.minimum(np.concatenate(([0], end[first[1:] - 1])), cap)
        comparable = known[first] & np.concatenate(([True], known[first[1:] - 1]))
        base = np.minimum(bases, np.uint64(cap)).astype(np.int64)
        for c in np.flatnonzero(comparable & (base != prev_end)).tolist():
            at, note = _lut_row(lut, c * schema.LUT_CHUNK2)
            ends = f"content offset {int(prev_end[c])}" if prev_end[c] < cap else "past the end of the content"
            self.add("IID111", "lut", at, f"LUT chunk {c}: {kind}_base is {int(bases[c])}, the {kind} records of the entries before it end at {ends}{note}")

    def segment_v2(self, key: int, row: Any, bbox: tuple[int, int, int, int], at: int, note: str,
                   span: tuple[np.ndarray, np.ndarray, np.ndarray] | None, segs: _View | None, used_codecs: set[int]) -> None:
        """An entry's mask: one payload over its bbox, decoded with the LUT
        row's codec, its pixels counted against the row's area (findings
        about the row at ``at``, about the payload at its block)."""
        h, w, area = int(row["height"]), int(row["width"]), int(row["area"])
        if not (h and w):
            self.check_area(key, at, "lut", bbox, area, [], True, note)  # no payload: an empty mask
            return
        cid = int(row["codec"])
        used_codecs.add(cid)
        if h * w > _masks.MAX_MASK_PIXELS:
            self.check_area(key, at, "lut", bbox, area, [], False, note)  # reports IID051, reads nothing
            return
        if span is None or segs is None or not span[2][key]:
            return  # no segs content, or the payload lies outside it (reported)
        rel, n = int(span[0][key]), int(span[1][key])
        region = _Region(segs.at(rel), bbox, cid, segs.read(rel, n), segs.note(rel))
        self.check_area(key, at, "lut", bbox, area, [region], True, note)

    # -- indexes (versions 1 and 2) -------------------------------------------

    def index_error(self, code: str, view: _View, exc: IIDFormatError, prefix: str = "") -> None:
        """Report an index reader's error (its offset counts from the section's start)."""
        self.add_in(code, view, exc.offset if exc.offset is not None else 0, prefix + exc.message)

    def spatial_index(self, view: _View) -> None:
        from .index.spatial import SpatialIndex, level_sizes

        try:
            idx = SpatialIndex(view.read, 0, view.size)
        except IIDFormatError as exc:
            self.index_error("IID080", view, exc)
            return
        if idx.num_entries != self.count:
            self.add_in("IID081", view, 0, f"spatial index covers {idx.num_entries} entries, the file has {self.count}")
        try:
            found = np.asarray(idx.search((0, 0, schema.MAX_U32 + 1, schema.MAX_U32 + 1)), dtype=np.int64)
        except IIDFormatError as exc:
            self.index_error("IID080", view, exc, "a query fails: ")
            return
        boxes = self.boxes
        if boxes is None or len(boxes) != self.count or self.count == 0:
            return  # the LUT is unusable (already reported)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        want = np.flatnonzero(nonempty)
        if found.size != want.size or not np.array_equal(np.sort(found), want):
            missing = np.setdiff1d(want, found)
            extra = np.setdiff1d(found, want)
            self.add_in("IID081", view, 0, f"a whole-image query finds {found.size} entries, {want.size} have a non-empty bbox "
                        f"({missing.size} missing, e.g. {missing[:5].tolist()}; {extra.size} extra, e.g. {extra[:5].tolist()})")
        # every leaf must carry its entry's bbox, or queries miss it
        sizes = level_sizes(idx.num_entries, idx.node_size)
        if not sizes:
            return
        node = _SPATIAL_NODE_DTYPE.itemsize
        leaf_at = _SPATIAL_HEAD_SIZE + sum(sizes[1:]) * node
        leaves = np.frombuffer(view.read(leaf_at, sizes[0] * node), dtype=_SPATIAL_NODE_DTYPE, count=sizes[0])
        lb = np.stack([leaves["minr"], leaves["minc"], leaves["maxr"], leaves["maxc"]], axis=1).astype(np.int64)
        refs = leaves["ref"].astype(np.int64)
        live = (lb[:, 2] > lb[:, 0]) & (lb[:, 3] > lb[:, 1]) & (refs < self.count)
        wrong = np.flatnonzero(live & (lb != boxes[np.where(live, refs, 0)]).any(axis=1))
        for i in wrong[: (self.max_per_code or 10**9)].tolist():
            self.add_in("IID081", view, leaf_at + i * node,
                        f"leaf {i} gives entry {int(refs[i])} the bbox {tuple(lb[i].tolist())}, the LUT says {tuple(boxes[refs[i]].tolist())}")
        counts = np.bincount(refs[live], minlength=self.count)[: self.count]
        dup = np.flatnonzero(counts > 1)
        if dup.size:
            self.add_in("IID081", view, leaf_at, f"{dup.size} entries have more than one leaf (e.g. {dup[:5].tolist()})")

    def address_index(self, view: _View) -> None:
        from .index.address import AddressIndex

        try:
            idx = AddressIndex(view.read, 0, view.size)
        except IIDFormatError as exc:
            self.index_error("IID082", view, exc)
            return
        if idx.num_entries != self.count:
            self.add_in("IID083", view, 0, f"address index covers {idx.num_entries} entries, the file has {self.count}")
        bits, n = idx.bucket_bits, idx.num_entries
        nb = 1 << bits
        table_at = _ADDR_HEAD_SIZE
        bucket = _ADDR_BUCKET_DTYPE.itemsize
        starts = np.frombuffer(view.read(table_at, (nb + 1) * bucket), dtype=_ADDR_BUCKET_DTYPE, count=nb + 1)["start"].astype(np.int64)
        bad = (np.diff(starts) < 0) | (starts[1:] > n)
        if bad.any() or starts[0] > n:
            i = int(np.argmax(bad)) if bad.any() else 0
            self.add_in("IID082", view, table_at + i * bucket,
                        f"bucket table is not a non-decreasing list of record indices <= {n} (first bad bucket {i})")
            return
        size_of = _ADDR_RECORD_DTYPE.itemsize
        rec_at = table_at + (nb + 1) * bucket
        recs = np.frombuffer(view.read(rec_at, n * size_of), dtype=_ADDR_RECORD_DTYPE, count=n)
        hashes = recs["hash"].astype(np.uint64)
        rkeys = recs["key"].astype(np.int64)
        # records of bucket b are starts[b] .. starts[b+1]-1: each must hash into b
        lo, hi = int(starts[0]), int(starts[-1])
        in_bucket = np.repeat(np.arange(nb, dtype=np.int64), np.diff(starts))
        inb = (hashes[lo:hi] >> np.uint64(64 - bits)).astype(np.int64) if bits else np.zeros(hi - lo, np.int64)
        wrong = np.flatnonzero((inb != in_bucket) | (rkeys[lo:hi] >= n))
        if wrong.size:
            i = lo + int(wrong[0])
            self.add_in("IID082", view, rec_at + i * size_of, f"{wrong.size} records lie outside their bucket or refer to a key past {n} (first: record {i})")
        h1, h0 = hashes[1:], hashes[:-1]
        k1, k0 = rkeys[1:], rkeys[:-1]
        order = (h1 > h0) | ((h1 == h0) & (k1 > k0))
        if not order.all():
            i = 1 + int(np.argmin(order))
            self.add_in("IID082", view, rec_at + i * size_of, f"record {i} is out of (hash, key) order")
        # content: exactly one record (hash(address), key) per entry
        if len(self.address_hashes) == self.count:
            want_h = np.fromiter((self.address_hashes[k] for k in range(self.count)), dtype=np.uint64, count=self.count)
            want = set(zip(want_h.tolist(), range(self.count)))
            have = set(zip(hashes.tolist(), rkeys.tolist()))
            if want != have:
                self.add_in("IID083", view, 0, f"address index records differ from the entries' addresses "
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
