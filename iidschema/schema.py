"""The ``.iid`` format, declared once with `construct`.

This module is the single source of truth for the byte layout.  Everything
that touches bytes elsewhere in the library *derives* from the declarations
here instead of keeping a second, hand-written copy of the layout:

* :func:`dtype_of` turns a fixed-size :class:`construct.Struct` into a numpy
  structured dtype (the zero-copy LUT view, vectorised segment heads);
* :func:`format_of` turns the same Struct into a :mod:`struct` format string
  (the per-record fast path of the reader and the writer);
* the construct objects themselves parse and build headers, metadata and
  groups, and :data:`File` parses or builds a whole file (used by tests to
  prove that the fast paths agree with the declarations).

The header's ``version`` field dispatches (:class:`construct.Switch`) to the
layout of that version.  An unknown version raises
:class:`~iidschema.errors.IIDVersionError`: construct's ``Switch`` would
silently parse nothing by default, so the default branch raises.

Never call ``.compile()`` on these declarations to parse untrusted files: the
compiled parsers skip the checks that keep malformed files out.

Version 0 is what ``iidfile`` 0.2.0 writes, byte for byte (see
``docs/FORMAT.md`` for where that differs from its README's BNF).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from construct import (
    Adapter,
    Array,
    Bytes,
    Check,
    Const,
    Construct,
    FixedSized,
    FormatField,
    GreedyBytes,
    Int16ul,
    Int32ul,
    Int64ul,
    Peek,
    Pointer,
    Prefixed,
    Renamed,
    Struct,
    Subconstruct,
    Switch,
    Tell,
    this,
)
from construct.core import stream_tell

from .errors import IIDFormatError, IIDVersionError

__all__ = [
    "SUPPORTED_VERSIONS",
    "dtype_of",
    "format_of",
    "sizeof",
    "Json",
    "ToEnd",
    "StructArray",
    "Version",
    "BufLoc0",
    "Header0",
    "LutEntry0",
    "IIDHead0",
    "IIDRecord0",
    "Groups0",
    "SegmentHead0",
    "RegionHead0",
    "Region0",
    "Segment0",
    "GroupKey0",
    "GroupTableLen0",
    "GroupTable0",
    "Header",
    "File0",
    "File",
    "packed_len",
]

# --------------------------------------------------------------------------
# Helpers that derive fast-path layouts from the declarations
# --------------------------------------------------------------------------

def _unwrap(con: Construct) -> Construct:
    while isinstance(con, Renamed):
        con = con.subcon
    return con


def format_of(con: Construct) -> str:
    """The :mod:`struct` format of a fixed-size, flat declaration.

    Works for a :class:`FormatField` or a Struct whose fields are FormatFields
    or nested Structs of them (flattened in declaration order).
    """
    con = _unwrap(con)
    if isinstance(con, FormatField):
        return con.fmtstr
    if isinstance(con, Struct):
        order = None
        codes = []
        for sub in con.subcons:
            fmt = format_of(sub)
            if order is None:
                order = fmt[0]
            elif fmt[0] != order:
                raise TypeError("mixed byte orders in one struct")
            codes.append(fmt[1:])
        return (order or "<") + "".join(codes)
    raise TypeError(f"no fixed struct format for {con!r}")


def dtype_of(con: Construct) -> np.dtype:
    """The numpy dtype of a fixed-size declaration (nested Structs nest).

    Field names and order come from the declaration, so a numpy view of a
    table and a construct parse of one row always agree.
    """
    con = _unwrap(con)
    if isinstance(con, FormatField):
        order, code = con.fmtstr[0], con.fmtstr[1:]
        # struct's standard sizes ("<L" is 4 bytes) differ from numpy's
        # native C sizes ("L" is a C long), so map codes by meaning.
        return np.dtype(_STRUCT_TO_NUMPY[code]).newbyteorder(order)
    if isinstance(con, Struct):
        fields = []
        for sub in con.subcons:
            if sub.name is None:
                raise TypeError("anonymous field in a struct used as a dtype")
            fields.append((sub.name, dtype_of(sub)))
        dt = np.dtype(fields)
        if dt.itemsize != con.sizeof():
            raise TypeError("declaration and dtype sizes disagree")
        return dt
    raise TypeError(f"no numpy dtype for {con!r}")


_STRUCT_TO_NUMPY = {
    "B": "u1", "b": "i1", "H": "u2", "h": "i2", "I": "u4", "L": "u4",
    "i": "i4", "l": "i4", "Q": "u8", "q": "i8", "e": "f2", "f": "f4", "d": "f8",
}


def sizeof(con: Construct) -> int:
    """Byte size of a fixed-size declaration."""
    return con.sizeof()


def packed_len(height: int, width: int) -> int:
    """Bytes of ``numpy.packbits`` of a ``height x width`` mask."""
    return (height * width + 7) // 8


# --------------------------------------------------------------------------
# Small custom constructs
# --------------------------------------------------------------------------

class _JsonAdapter(Adapter):
    """Raw UTF-8 JSON bytes <-> Python object.

    Built with :func:`json.dumps` defaults (``ensure_ascii=True``, separators
    ``", "``/``": "``), which is what iidfile 0.2.0 writes: keeping them makes
    our version-0 output byte-identical.
    """

    def _decode(self, obj: bytes, context: Any, path: str) -> Any:
        try:
            return json.loads(bytes(obj).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise IIDFormatError(f"invalid JSON: {exc}") from None
        except RecursionError:
            raise IIDFormatError("JSON nested too deeply to parse") from None

    def _encode(self, obj: Any, context: Any, path: str) -> bytes:
        return json.dumps(obj).encode("utf-8")


def Json(subcon: Construct = GreedyBytes) -> Construct:
    """JSON stored in the bytes of ``subcon`` (raw, no prefix by default)."""
    return _JsonAdapter(subcon)


class ToEnd(Subconstruct):
    """Repeat ``subcon`` until the (sub)stream is exhausted.

    Unlike :class:`construct.GreedyRange` this never swallows an error: a
    damaged element raises instead of silently ending the list.  Used for
    the regions of a segment, whose count is implicit in version 0.
    """

    def _parse(self, stream, context, path):
        start = stream_tell(stream, path)
        end = stream.seek(0, 2)
        stream.seek(start)
        items = []
        while stream_tell(stream, path) < end:
            items.append(self.subcon._parsereport(stream, context, path))
        return items

    def _build(self, obj, stream, context, path):
        for item in obj:
            self.subcon._build(item, stream, context, path)
        return obj

    def _sizeof(self, context, path):
        raise NotImplementedError("ToEnd has no fixed size")


class StructArray(Construct):
    """``count`` fixed-size records as a zero-copy numpy structured array.

    ``Array(n, Struct(...))`` builds one Python container per row, which is
    unusable for a million-row lookup table.  This construct keeps the row
    declaration (``subcon``) as the source of truth, derives the dtype from
    it, and on parse returns ``numpy.frombuffer`` over the buffer passed to
    ``parse_stream(..., buffer=...)`` (the mmap) when there is one, so the
    table is a view, not a copy.  Building accepts a structured array of that
    dtype (or a list of dicts).
    """

    def __init__(self, count, subcon: Construct):
        super().__init__()
        self.count = count
        self.subcon = subcon
        self.dtype = dtype_of(subcon)

    def _count(self, context) -> int:
        count = self.count(context) if callable(self.count) else self.count
        if count < 0:
            raise IIDFormatError("negative record count")
        return count

    def _parse(self, stream, context, path):
        count = self._count(context)
        size = count * self.dtype.itemsize
        start = stream_tell(stream, path)
        buffer = context._params.get("buffer") if hasattr(context, "_params") else None
        if buffer is not None:
            if start + size > len(buffer):
                raise IIDFormatError("table runs past the end of the buffer", offset=start)
            stream.seek(start + size)
            return np.frombuffer(buffer, dtype=self.dtype, count=count, offset=start)
        data = stream.read(size)
        if len(data) != size:
            raise IIDFormatError("table runs past the end of the buffer", offset=start)
        return np.frombuffer(data, dtype=self.dtype, count=count)

    def _build(self, obj, stream, context, path):
        arr = obj if isinstance(obj, np.ndarray) else _records(obj, self.dtype)
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        stream.write(arr.tobytes())
        return arr

    def _sizeof(self, context, path):
        return self._count(context) * self.dtype.itemsize


def _records(rows, dtype: np.dtype) -> np.ndarray:
    out = np.zeros(len(rows), dtype=dtype)
    for i, row in enumerate(rows):
        out[i] = _as_tuple(row, dtype)
    return out


def _as_tuple(row, dtype):
    if dtype.names is None:
        return row
    return tuple(_as_tuple(row[name], dtype.fields[name][0]) for name in dtype.names)


class _UnsupportedVersion(Construct):
    """Default branch of the version switch: always raises."""

    def __init__(self, supported):
        super().__init__()
        self.supported = tuple(supported)

    def _parse(self, stream, context, path):
        raise IIDVersionError(context.version, self.supported)

    def _build(self, obj, stream, context, path):
        raise IIDVersionError(context.version, self.supported)

    def _sizeof(self, context, path):
        raise IIDVersionError(context.version, self.supported)


# --------------------------------------------------------------------------
# Common types (seed BNF: "Common types")
# --------------------------------------------------------------------------
#   uint16 ::= 2 byte    uint32 ::= 4 byte    (little-endian, see FORMAT.md)
#   key    ::= uint32    area ::= uint32       len ::= uint32
#   bufloc ::= uint32 uint32                   offset, length
#   bbox   ::= uint16*4                        minr, minc, maxr, maxc

Version = Int32ul
Key0 = Int32ul
Area0 = Int32ul
BufLoc0 = Struct("offset" / Int32ul, "length" / Int32ul)
BBox0 = Struct("minr" / Int16ul, "minc" / Int16ul, "maxr" / Int16ul, "maxc" / Int16ul)

#: Largest coordinate / offset a version-0 field can hold.
MAX_COORD_V0 = 0xFFFF
MAX_U32 = 0xFFFFFFFF

# --------------------------------------------------------------------------
# Version 0 (iidfile 0.2.0)
# --------------------------------------------------------------------------
#   header ::= version rformat bufloc_lut bufloc_iids bufloc_meta
#              bufloc_groups bufloc_segs          (12 x uint32, absolute offsets)
Header0 = Struct(
    "version" / Version,
    "rformat" / Int32ul,
    "lut" / BufLoc0,
    "iids" / BufLoc0,
    "meta" / BufLoc0,
    "groups" / BufLoc0,
    "segs" / BufLoc0,
)
HEADER0_SIZE = Header0.sizeof()  # 48

#   lut ::= { key iid seg }   iid, seg ::= bufloc, offsets relative to their section
LutEntry0 = Struct("key" / Key0, "iid" / BufLoc0, "seg" / BufLoc0)

#   iid record ::= key len len bytes bytes       key, domain_len, address_len, domain, address
IIDHead0 = Struct("key" / Key0, "domain_len" / Int32ul, "address_len" / Int32ul)
IIDRecord0 = Struct(
    "key" / Key0,
    "domain_len" / Int32ul,
    "address_len" / Int32ul,
    "domain" / Bytes(this.domain_len),
    "address" / Bytes(this.address_len),
)

#   meta ::= raw json bytes, NO length prefix (the header gives the length)
Meta0 = Json(GreedyBytes)

#   groups ::= len json { group }   group ::= { key }
#   json: list of {"name", "offset", "length"}, offsets relative to the first
#   byte after the json.
#   The table is small (one item per group) and comes first: a reader finds
#   one group from the length prefix and the table alone, then reads only
#   that group's keys.
GroupKey0 = Int32ul
GroupTableLen0 = Int32ul
GroupTable0 = Json(GreedyBytes)
Groups0 = Struct(
    "table" / Prefixed(GroupTableLen0, GroupTable0),
    "data_start" / Tell,
    "data" / GreedyBytes,
)

#   segment ::= key bbox area { region }   (regions until the LUT length is used up)
#   region  ::= len bbox { byte }          len counts its own 4 bytes;
#                                          bbox absolute; packbits of the mask
SegmentHead0 = Struct("key" / Key0, "bbox" / BBox0, "area" / Area0)
RegionHead0 = Struct("len" / Int32ul, "bbox" / BBox0)
REGION_HEAD0_SIZE = RegionHead0.sizeof()  # 12


class _RegionBits(Construct):
    """The packbits payload of a region: ``len - 12`` bytes, which must be
    exactly ``ceil(h*w/8)`` for the region's bbox."""

    def _parse(self, stream, context, path):
        n = context.len - REGION_HEAD0_SIZE
        b = context.bbox
        h, w = b.maxr - b.minr, b.maxc - b.minc
        if n < 0 or h <= 0 or w <= 0 or n != packed_len(h, w):
            raise IIDFormatError("region length does not match its bbox", offset=stream_tell(stream, path))
        data = stream.read(n)
        if len(data) != n:
            raise IIDFormatError("region runs past its segment", offset=stream_tell(stream, path))
        return data

    def _build(self, obj, stream, context, path):
        stream.write(obj)
        return obj

    def _sizeof(self, context, path):
        raise NotImplementedError


Region0 = Struct("len" / Int32ul, "bbox" / BBox0, "mask" / _RegionBits())
Segment0 = Struct(
    "key" / Key0,
    "bbox" / BBox0,
    "area" / Area0,
    "regions" / ToEnd(Region0),
)

#   file ::= header lut iids meta groups segments
File0 = Struct(
    "header" / Header0,
    "lut" / Pointer(this.header.lut.offset, StructArray(this.header.lut.length // LutEntry0.sizeof(), LutEntry0)),
    "iids" / Array(
        this.header.lut.length // LutEntry0.sizeof(),
        Pointer(
            lambda ctx: ctx.header.iids.offset + int(ctx.lut[ctx._index]["iid"]["offset"]),
            FixedSized(lambda ctx: int(ctx.lut[ctx._index]["iid"]["length"]), IIDRecord0),
        ),
    ),
    "meta" / Pointer(this.header.meta.offset, FixedSized(this.header.meta.length, Meta0)),
    "groups" / Pointer(this.header.groups.offset, FixedSized(this.header.groups.length, Groups0)),
    "segs" / Array(
        this.header.lut.length // LutEntry0.sizeof(),
        Pointer(
            lambda ctx: ctx.header.segs.offset + int(ctx.lut[ctx._index]["seg"]["offset"]),
            FixedSized(lambda ctx: int(ctx.lut[ctx._index]["seg"]["length"]), Segment0),
        ),
    ),
)

# --------------------------------------------------------------------------
# Version 1: wide coordinates, 64-bit offsets, codec ids, checksums, indexes
# --------------------------------------------------------------------------
#   file    ::= header { section }            sections anywhere after the header,
#                                             8-byte aligned, never overlapping
#   header  ::= version rformat magic entry_count flags section_count
#               { section_entry } header_crc  header_crc: CRC32C of every header
#                                             byte before it
#   section_entry ::= id flags crc offset length
#                                             crc: CRC32C of the section's bytes
#                                             flags bit 0: REQUIRED (a reader that does
#                                             not know the id must refuse the file);
#                                             unknown optional sections are skipped

MAGIC1 = b"\x89IID\r\n\x1a\n"
MAX_SECTIONS = 64
MAX_COORD_V1 = MAX_U32


class SectionId:
    """Section ids of version 1 (uint16).  0x8000-0xFFFF: private/experimental."""

    LUT = 1
    IIDS = 2
    META = 3
    GROUPS = 4
    SEGS = 5
    SPATIAL_INDEX = 6
    ADDRESS_INDEX = 7
    CODECS = 8
    BLOCK_CRCS = 9

    NAMES = {
        1: "lut", 2: "iids", 3: "meta", 4: "groups", 5: "segs",
        6: "spatial_index", 7: "address_index", 8: "codecs", 9: "block_crcs",
    }
    #: name -> id, the inverse of NAMES
    IDS = {name: sid for sid, name in NAMES.items()}
    MANDATORY = (1, 2, 3, 4, 5)


SECTION_REQUIRED = 0x0001

BBox1 = Struct("minr" / Int32ul, "minc" / Int32ul, "maxr" / Int32ul, "maxc" / Int32ul)
BufLoc1 = Struct("offset" / Int64ul, "length" / Int64ul)

SectionEntry1 = Struct(
    "id" / Int16ul,
    "flags" / Int16ul,
    "crc" / Int32ul,
    "offset" / Int64ul,
    "length" / Int64ul,
)

HeaderFixed1 = Struct(
    "version" / Version,
    "rformat" / Int32ul,
    "magic" / Const(MAGIC1),
    "entry_count" / Int32ul,
    "flags" / Int32ul,
    "section_count" / Int32ul,
)
Header1 = Struct(
    *HeaderFixed1.subcons,
    Check(this.section_count <= MAX_SECTIONS),
    "sections" / Array(this.section_count, SectionEntry1),
    "header_crc" / Int32ul,
)
HEADER1_FIXED_SIZE = HeaderFixed1.sizeof()  # 28


def header1_size(section_count: int) -> int:
    """Bytes of a version-1 header with ``section_count`` sections."""
    return HEADER1_FIXED_SIZE + section_count * SectionEntry1.sizeof() + 4


#   lut      ::= { lut_entry } { block_crc }  block_crc: CRC32C of each run of
#                                             LUT_BLOCK rows (the last may be short)
#   lut_entry ::= iid seg area bbox iid_crc seg_crc        (64 bytes, key = row index)
#     iid, seg ::= offset:uint64 length:uint64  relative to the iids / segs section
#     area     ::= uint64                       pixels set in the mask
#     bbox     ::= uint32*4                     minr, minc, maxr, maxc (max exclusive)
#     iid_crc, seg_crc ::= uint32               CRC32C of the record
LUT_BLOCK = 64
LutEntry1 = Struct(
    "iid" / BufLoc1,
    "seg" / BufLoc1,
    "area" / Int64ul,
    "bbox" / BBox1,
    "iid_crc" / Int32ul,
    "seg_crc" / Int32ul,
)
BlockCrc1 = Int32ul


def lut1_size(count: int) -> int:
    """Bytes of a version-1 LUT section of ``count`` rows (rows + block CRCs)."""
    return count * LutEntry1.sizeof() + ((count + LUT_BLOCK - 1) // LUT_BLOCK) * BlockCrc1.sizeof()


#   iid record ::= key domain_len address_len domain address    (as version 0)
IIDHead1 = IIDHead0
IIDRecord1 = IIDRecord0

#   segment ::= key region_count { region }
#   region  ::= bbox codec flags length { byte }
#     bbox   ::= uint32*4   absolute image coordinates, inside the LUT bbox, non-empty
#     codec  ::= uint16     mask codec id (0 packbits, 1 rle, 2 zstd; see CODECS.md)
#     flags  ::= uint16     reserved, 0
#     length ::= uint64     payload bytes
SegmentHead1 = Struct("key" / Key0, "region_count" / Int32ul)
RegionHead1 = Struct("bbox" / BBox1, "codec" / Int16ul, "flags" / Int16ul, "length" / Int64ul)
Region1 = Struct(
    "bbox" / BBox1,
    "codec" / Int16ul,
    "flags" / Int16ul,
    "length" / Int64ul,
    "payload" / Bytes(this.length),
)
Segment1 = Struct("key" / Key0, "region_count" / Int32ul, "regions" / Array(this.region_count, Region1))

#   meta   ::= raw UTF-8 JSON (as version 0)
#   groups ::= len json { group }           (as version 0)
#   codecs ::= count:uint16 { id:uint16 }   every codec id used by a region
Meta1 = Meta0
Groups1 = Groups0
CodecId1 = Int16ul
Codecs1 = Struct("count" / Int16ul, "ids" / Array(this.count, CodecId1))

#   block_crcs ::= table_count:uint32 { block_table }
#   block_table ::= section_id:uint16 reserved:uint16 block_size:uint32 count:uint32
#                   { crc:uint32 }          CRC32C of each block_size run of the
#                                           section's bytes (the last may be short)
#   Lets a reader verify only the blocks of a large section it reads (the
#   groups and index sections), instead of the whole section.
BLOCK_SIZE1 = 4096
BlockTableHead1 = Struct("section_id" / Int16ul, "reserved" / Int16ul, "block_size" / Int32ul, "count" / Int32ul)
BlockTable1 = Struct(*BlockTableHead1.subcons, "crcs" / StructArray(this.count, BlockCrc1))
BlockCrcs1 = Struct("table_count" / Int32ul, "tables" / Array(this.table_count, BlockTable1))

#   The two index sections (algorithms in docs/INDEXES.md, code in iidschema.index)

#   spatial_index ::= spatial_header { spatial_node }          (num_nodes records)
#   spatial_header ::= "SIDX" node_size:u32 num_entries:u32 num_levels:u32 num_nodes:u64
#   spatial_node   ::= minr:u32 minc:u32 maxr:u32 maxc:u32 ref:u32
#   All little-endian.  Nodes: root level first, leaf level last (docs/INDEXES.md).
SPATIAL_MAGIC = b"SIDX"
SpatialHeader = Struct(
    "magic" / Const(SPATIAL_MAGIC),
    "node_size" / Int32ul,
    "num_entries" / Int32ul,
    "num_levels" / Int32ul,
    "num_nodes" / Int64ul,
)
SpatialNode = Struct(
    "minr" / Int32ul,
    "minc" / Int32ul,
    "maxr" / Int32ul,
    "maxc" / Int32ul,
    "ref" / Int32ul,
)

#   address_index  ::= address_header bucket_table { address_record }
#   address_header ::= "AIDX" hash_id:u32 bucket_bits:u32 num_entries:u32
#   bucket_table   ::= { start:u32 }                       (2^bucket_bits + 1 entries)
#   address_record ::= hash:u64 key:u32                    (num_entries, sorted by (hash, key))
#   All little-endian.  hash_id 1 = XXH3-64, seed 0, of the address bytes.
ADDRESS_MAGIC = b"AIDX"
HASH_XXH3_64 = 1
AddressHeader = Struct(
    "magic" / Const(ADDRESS_MAGIC),
    "hash_id" / Int32ul,
    "bucket_bits" / Int32ul,
    "num_entries" / Int32ul,
)
AddressBucket = Struct("start" / Int32ul)
AddressRecord = Struct("hash" / Int64ul, "key" / Int32ul)

File1 = Struct(
    "header" / Header1,
    "sections" / Array(
        this.header.section_count,
        Pointer(
            lambda ctx: ctx.header.sections[ctx._index].offset,
            FixedSized(lambda ctx: ctx.header.sections[ctx._index].length, GreedyBytes),
        ),
    ),
)

# --------------------------------------------------------------------------
# Version 2: version 1's header and sections, with the bulky sections stored
# in independently compressed blocks, a columnar LUT and bare mask payloads
# (docs/FORMAT.md, "Version 2").
# --------------------------------------------------------------------------
#   file      ::= header2 { section }           header2: as version 1, version = 2
#   plain sections (stored as they are, CRC32C of their bytes in the header):
#     meta, codecs                               as version 1
#   blocked sections (everything else: lut, iids, groups, segs, spatial_index,
#   address_index), each ::= blocked:
#     blocked   ::= raw_length:u64 block_size:u32 compression:u16 shuffle:u16
#                   count:u32 { block_ref } { block }
#     block_ref ::= offset:u64 length:u32 crc:u32
#   The section's *content* (raw_length bytes) is cut into blocks of
#   block_size bytes (the last may be short), each stored compressed on its
#   own: random access costs one block, not the section.  ``offset`` is
#   relative to the section start; blocks follow the table back to back, in
#   order, up to the section's end.  ``crc`` is the CRC32C of the stored
#   (compressed) block; the header's section CRC covers the 20-byte head (a
#   damaged table row is caught by its block's CRC, so a reader reads only
#   the rows of the blocks it needs).  compression: 0 stored, 1 one zstd frame.  shuffle: 0 or
#   1 none; t >= 2: before compression each block's first floor(n / t) * t
#   bytes were byte-shuffled with element size t (byte 0 of every t-byte
#   element, then byte 1, ...: blosc's shuffle), the rest left as is.
#
#   Contents of the blocked sections:
#     lut    ::= { lut_chunk }   LUT_CHUNK2 entries per chunk (the last may be
#                short); block_size is the size of a whole chunk, so block i
#                is chunk i
#     lut_chunk (m entries) ::= iid_base:u64 seg_base:u64 columns
#       columns ::= every field of LutEntry2 as a column of m values,
#                byte-planar: byte 0 of every value, then byte 1, ...
#     iids   ::= { iid record }  as version 0, in key order, back to back:
#                entry k's record starts at its chunk's iid_base plus the
#                iid_length of the chunk's entries before it
#     segs   ::= { payload }     entry k's mask over its bbox, encoded by its
#                codec (0 packbits, 1 rle, 2 zstd, ...), in key order, back
#                to back (found as iids are, by seg_base and seg_length); no
#                head: the LUT row says the rest
#     groups, spatial_index, address_index ::= as version 1
BLOCK_STORED = 0
BLOCK_ZSTD = 1
BLOCK_COMPRESSIONS = {BLOCK_STORED: "stored", BLOCK_ZSTD: "zstd"}
#: Largest block a reader accepts (it allocates one block to decompress it).
MAX_BLOCK_SIZE2 = 1 << 24
#: Sections of version 2 stored in blocks (the others are stored plain).
BLOCKED_SECTIONS2 = frozenset({SectionId.LUT, SectionId.IIDS, SectionId.GROUPS, SectionId.SEGS,
                               SectionId.SPATIAL_INDEX, SectionId.ADDRESS_INDEX})
#: Sections a version-2 file must have (block_crcs does not exist in version 2).
MANDATORY2 = SectionId.MANDATORY

Header2 = Header1
BlockedHead2 = Struct(
    "raw_length" / Int64ul,
    "block_size" / Int32ul,
    "compression" / Int16ul,
    "shuffle" / Int16ul,
    "count" / Int32ul,
)
BLOCKED_HEAD2_SIZE = BlockedHead2.sizeof()  # 20
BlockRef2 = Struct("offset" / Int64ul, "length" / Int32ul, "crc" / Int32ul)
BlockTable2 = Struct(*BlockedHead2.subcons, "blocks" / StructArray(this.count, BlockRef2))

#   lut_entry (key = position) ::= minr minc height width area iid_length
#                                  seg_length codec
#     minr, minc, height, width ::= uint32   bbox: rows minr..minr+height-1,
#                                            columns minc..minc+width-1
#     area       ::= uint64   pixels set in the mask
#     iid_length ::= uint32   bytes of the entry's IID record
#     seg_length ::= uint64   bytes of the entry's mask payload
#     codec      ::= uint16   mask codec id of the payload
LUT_CHUNK2 = 1024
LutChunkHead2 = Struct("iid_base" / Int64ul, "seg_base" / Int64ul)
LutEntry2 = Struct(
    "minr" / Int32ul,
    "minc" / Int32ul,
    "height" / Int32ul,
    "width" / Int32ul,
    "area" / Int64ul,
    "iid_length" / Int32ul,
    "seg_length" / Int64ul,
    "codec" / Int16ul,
)
LUT_CHUNK_HEAD2 = LutChunkHead2.sizeof()  # 16
#: A payload may be at most its bbox's pixel count plus this many bytes (no
#: codec needs more than a byte per pixel), and none when the bbox is empty:
#: a reader bounds what it decompresses for a record before reading it.
PAYLOAD_SLACK2 = 64
LUT2_ROW = LutEntry2.sizeof()  # 38
#: Content bytes of a LUT chunk of LUT_CHUNK2 entries (the LUT's block size).
LUT_CHUNK2_SIZE = LUT_CHUNK_HEAD2 + LUT_CHUNK2 * LUT2_ROW


def lut2_size(count: int) -> int:
    """Content bytes of a version-2 LUT of ``count`` entries."""
    return -(-count // LUT_CHUNK2) * LUT_CHUNK_HEAD2 + count * LUT2_ROW


class BytePlanar(StructArray):
    """``count`` records of a flat Struct stored as byte-planar columns.

    Each field is one column of ``count`` values, and each column is stored
    byte-planar (all first bytes, then all second bytes, ...), the shuffle
    of blosc: the high bytes of small numbers become long runs of zeros that
    a block compressor removes.  Parses to (and builds from) a numpy
    structured array of the Struct's dtype, as :class:`StructArray` does
    for rows, so the declaration stays the source of truth for the layout
    (always a copy: the bytes are not in row order).
    """

    def _parse(self, stream, context, path):
        count = self._count(context)
        start = stream_tell(stream, path)
        data = stream.read(count * self.dtype.itemsize)
        if len(data) != count * self.dtype.itemsize:
            raise IIDFormatError("columns run past the end of their data", offset=start)
        return planar_to_records(data, count, self.dtype)

    def _build(self, obj, stream, context, path):
        arr = obj if isinstance(obj, np.ndarray) else _records(obj, self.dtype)
        stream.write(records_to_planar(np.asarray(arr, dtype=self.dtype)))
        return arr


def planar_to_records(data: Any, count: int, dtype: np.dtype) -> np.ndarray:
    """The structured array of ``count`` records stored byte-planar in ``data``
    (see :class:`BytePlanar`); the numpy fast path every reader uses."""
    u8 = np.frombuffer(data, dtype=np.uint8, count=count * dtype.itemsize)
    out = np.empty(count, dtype=dtype)
    view = out.view(np.uint8).reshape(count, dtype.itemsize)
    pos = 0
    for name in dtype.names:
        ft, at = dtype.fields[name][:2]
        n = ft.itemsize
        view[:, at : at + n] = u8[pos : pos + count * n].reshape(n, count).T
        pos += count * n
    return out


def records_to_planar(arr: np.ndarray) -> bytes:
    """The byte-planar columns of a structured array (inverse of
    :func:`planar_to_records`)."""
    count = arr.size
    view = np.ascontiguousarray(arr).view(np.uint8).reshape(count, arr.dtype.itemsize)
    parts = []
    for name in arr.dtype.names:
        ft, at = arr.dtype.fields[name][:2]
        parts.append(np.ascontiguousarray(view[:, at : at + ft.itemsize].T).tobytes())
    return b"".join(parts)


LutChunk2 = Struct(*LutChunkHead2.subcons, "rows" / BytePlanar(this._params.entries, LutEntry2))

#: A whole version-2 file: version 1's header and sections (each section's
#: stored bytes; BlockTable2 and LutChunk2 parse what is inside them).
File2 = File1

# --------------------------------------------------------------------------
# Version dispatch
# --------------------------------------------------------------------------

#: Header layouts by version; extended by later versions below.
HEADERS: dict[int, Construct] = {0: Header0, 1: Header1, 2: Header2}
FILES: dict[int, Construct] = {0: File0, 1: File1, 2: File2}

SUPPORTED_VERSIONS: tuple[int, ...] = tuple(sorted(HEADERS))

Header = Struct(
    "version" / Peek(Version),
    "body" / Switch(this.version, HEADERS, default=_UnsupportedVersion(SUPPORTED_VERSIONS)),
)

File = Struct(
    "version" / Peek(Version),
    "body" / Switch(this.version, FILES, default=_UnsupportedVersion(SUPPORTED_VERSIONS)),
)

# Fast-path formats derived from the declarations above.
HEADER0 = struct.Struct(format_of(Header0))
LUT0_DTYPE = dtype_of(LutEntry0)
LUT0_ROW = LUT0_DTYPE.itemsize
IID_HEAD0 = struct.Struct(format_of(IIDHead0))
SEG_HEAD0 = struct.Struct(format_of(SegmentHead0))
SEG_HEAD0_DTYPE = dtype_of(SegmentHead0)
REGION_HEAD0 = struct.Struct(format_of(RegionHead0))
GROUP_KEY0_DTYPE = dtype_of(GroupKey0)
GROUP_TABLE_LEN0 = struct.Struct(format_of(GroupTableLen0))
LUT1_DTYPE = dtype_of(LutEntry1)
LUT1_ROW = LUT1_DTYPE.itemsize
SEG_HEAD1 = struct.Struct(format_of(SegmentHead1))
REGION_HEAD1 = struct.Struct(format_of(RegionHead1))
BLOCK_CRC1_DTYPE = dtype_of(BlockCrc1)
# Record heads as numpy dtypes, for the bulk readers that parse the heads of
# many records at once (iidschema.bulk).
IID_HEAD0_DTYPE = dtype_of(IIDHead0)
REGION_HEAD0_DTYPE = dtype_of(RegionHead0)
SEG_HEAD1_DTYPE = dtype_of(SegmentHead1)
REGION_HEAD1_DTYPE = dtype_of(RegionHead1)
LUT2_DTYPE = dtype_of(LutEntry2)
BLOCK_REF2_DTYPE = dtype_of(BlockRef2)
BLOCKED_HEAD2 = struct.Struct(format_of(BlockedHead2))
LUT_CHUNK_HEAD2_FMT = struct.Struct(format_of(LutChunkHead2))
