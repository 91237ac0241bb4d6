"""Writing version 2 (layout in :mod:`iidschema.schema`, "Version 2", and
``docs/FORMAT.md``).

Every mask is stored as one payload over its whole bbox, ``packbits`` by
default: the zstd blocks of the ``segs`` section then compress many small
masks together (far better than one codec call per mask could), and a
reader decodes any selection with one ``np.unpackbits``.  The LUT is built
as numpy columns and stored byte-planar per chunk of
:data:`~iidschema.schema.LUT_CHUNK2` entries; IID records, groups and both
indexes are version 1's, compressed in blocks too.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Iterable, Mapping

import numpy as np

from . import schema
from .adding import AddedColumns
from .blocked import compress_section
from .codecs import resolve_codec
from .codecs.packbits import PackBitsCodec, pack_masks
from .errors import IIDCodecError, IIDLimitError
from .masks import exclusive_cumsum

from . import writer as _writer
from .writer import Record, _iid_records, check_meta

__all__ = ["write_v2", "BLOCK_SIZE", "INDEX_BLOCK_SIZE", "LEVEL"]

#: Content bytes per block of the ``segs``, ``iids``, ``groups`` and index
#: sections.  A random read decompresses one block (tens of microseconds);
#: larger blocks compress a little better (docs/PERFORMANCE.md).
BLOCK_SIZE = 1 << 15
#: Content bytes per block of the two index sections: a query walks a node
#: per level, so small blocks keep it to a few KiB read (4 KiB costs about
#: 0.7 bytes per entry more than 32 KiB here).
INDEX_BLOCK_SIZE = 1 << 12
#: zstd level of every block.
LEVEL = 9
PAYLOAD_SLACK = schema.PAYLOAD_SLACK2


_GROUP_KEY = schema.GROUP_KEY0_DTYPE.itemsize
_NODE = schema.SpatialNode.sizeof()
_ADDRESS = schema.AddressRecord.sizeof()


def _whole(block_size: int, element: int) -> int:
    """``block_size`` rounded down to whole elements (at least one)."""
    return max(element, block_size // element * element)


def _packed_payloads(pm: Any) -> tuple[bytes, np.ndarray]:
    """The packbits payloads of a packed stream: the stream itself (it *is*
    the concatenated payloads) and their lengths."""
    return pm.packed[int(pm.starts[0]) : int(pm.starts[-1])].tobytes(), np.diff(pm.starts)


def _encode(masks: list[np.ndarray], codec: Any) -> tuple[list[bytes] | bytes, np.ndarray]:
    """The payloads of ``masks``: packbits (``codec`` None) packed together,
    else one ``codec.encode`` each."""
    if codec is None:
        return _packed_payloads(pack_masks(masks))
    # An empty bbox has no payload, whatever a codec would make of it.
    payloads = [bytes(codec.encode(m)) if m.size else b"" for m in masks]
    return payloads, np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))


def write_v2(
    out: BinaryIO,
    records: Iterable[Record],
    count: int,
    groups: Mapping[str, Iterable[int]],
    meta: Any,
    *,
    codec: Any = "auto",
    rformat: int = 0,
    progress: Callable[[int], None] | None = None,
    block_size: int = BLOCK_SIZE,
    level: int = LEVEL,
) -> int:
    """Write a version-2 file and return its size.

    ``codec``: ``"auto"`` or ``"packbits"`` (the default layout: the blocks
    compress), or any codec id, name or object, used for every mask.
    Sections are written meta, codecs, groups, lut, spatial and address
    indexes, iids, segs: what a lazy reader needs first sits near the header.
    """
    from .index.address import build_address_index
    from .index.spatial import build_spatial_index

    if count > schema.MAX_U32:
        raise IIDLimitError(f"version 2 holds at most {schema.MAX_U32} entries, got {count}")
    if not 1 <= block_size <= schema.MAX_BLOCK_SIZE2:
        raise ValueError(f"block_size must be in 1..{schema.MAX_BLOCK_SIZE2}, got {block_size}")
    resolved = resolve_codec(codec)
    if isinstance(resolved, PackBitsCodec) and type(resolved).encode is PackBitsCodec.encode:
        resolved = None  # the built-in packbits (not a subclass that encodes otherwise): the fast path
    codec_id = 0 if resolved is None else int(resolved.id)
    seg_chunks: list[Any] = []
    iid_chunks: list[bytes] = []
    seg_lens: list[np.ndarray] = []
    iid_lens: list[np.ndarray] = []
    box_parts: list[np.ndarray] = []
    area_parts: list[np.ndarray] = []
    addresses: list[bytes] = []
    done = 0
    for batch in _writer._batches(records):  # looked up here: tests watch the batches
        nb = len(batch)
        if done + nb > count:
            raise ValueError("more records than announced")
        if type(batch) is AddedColumns:
            iid_recs = _iid_records(batch.addresses, batch.domains, done)
            if resolved is None:
                payloads, lens = _packed_payloads(batch.packed)
            else:
                payloads, lens = _encode([batch.mask(i) for i in range(nb)], resolved)
            box_parts.append(batch.bboxes)
            area_parts.append(batch.areas)
            addresses += batch.addresses
        else:
            iids = [iid for iid, _ in batch]
            segs = [seg for _, seg in batch]
            batch_addresses = [iid.address for iid in iids]
            iid_recs = _iid_records(batch_addresses, [iid.domain for iid in iids], done)
            payloads, lens = _encode([seg.mask() for seg in segs], resolved)
            box_parts.append(np.fromiter(itertools.chain.from_iterable([seg.bbox for seg in segs]), np.int64, 4 * nb).reshape(nb, 4))
            area_parts.append(np.fromiter([seg.area for seg in segs], np.int64, nb))
            addresses += batch_addresses
        boxes = box_parts[-1]
        pixels = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        too_long = (lens > pixels + PAYLOAD_SLACK) | ((pixels == 0) & (lens > 0))
        if too_long.any():
            i = int(np.argmax(too_long))
            raise IIDCodecError(f"codec {codec_id} made a {int(lens[i])}-byte payload for a {int(pixels[i])}-pixel mask "
                                f"(entry {done + i}); version 2 allows at most a byte per pixel plus {PAYLOAD_SLACK}")
        seg_chunks.extend(payloads if isinstance(payloads, list) else [payloads])
        seg_lens.append(lens)
        iid_chunks.extend(iid_recs)
        iid_lens.append(np.fromiter(map(len, iid_recs), dtype=np.int64, count=nb))
        if progress is not None:
            for key in range(done, done + nb):
                progress(key)
        done += nb
    if done != count:
        raise ValueError(f"announced {count} records, got {done}")

    def cat(parts: list[np.ndarray], shape: tuple = (0,)) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(shape, dtype=np.int64)

    boxes = cat(box_parts, (0, 4))
    lut = np.zeros(count, dtype=schema.LUT2_DTYPE)
    lut["minr"], lut["minc"] = boxes[:, 0], boxes[:, 1]
    lut["height"], lut["width"] = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    lut["area"] = cat(area_parts)
    bases = {}
    for name, parts in (("iid", iid_lens), ("seg", seg_lens)):
        lens = cat(parts)
        lut[f"{name}_length"] = lens
        bases[name] = exclusive_cumsum(lens)
    lut["codec"] = codec_id
    chunk = schema.LUT_CHUNK2
    # Each chunk: where its first entry's records start, then its columns.
    lut_content = [schema.LUT_CHUNK_HEAD2_FMT.pack(int(bases["iid"][i]), int(bases["seg"][i]))
                   + schema.records_to_planar(lut[i : i + chunk]) for i in range(0, count, chunk)]
    del lut

    threads = 2 if (os.cpu_count() or 1) > 1 else 1
    with ThreadPoolExecutor(max_workers=1) as side:
        # The indexes are built beside the compression of the big sections.
        indexes = side.submit(lambda: (build_spatial_index(boxes), build_address_index(addresses)))
        segs = compress_section(seg_chunks, block_size, level, threads)
        del seg_chunks
        iids = compress_section(iid_chunks, block_size, level, threads)
        del iid_chunks
        lut_section = compress_section(lut_content, schema.LUT_CHUNK2_SIZE, level, threads)
        spatial, address = indexes.result()
    used = [codec_id] if count else []
    sections: list[tuple[int, list[bytes]]] = [
        (schema.SectionId.META, [check_meta(meta)]),
        (schema.SectionId.CODECS, [schema.Codecs1.build({"count": len(used), "ids": used})]),
        # Group keys and index records byte-shuffled by their element size
        # before compression: their high bytes are mostly alike.
        (schema.SectionId.GROUPS, compress_section([_writer._groups_v0(groups, count)], block_size, level, 1, _GROUP_KEY)),
        (schema.SectionId.LUT, lut_section),
        (schema.SectionId.SPATIAL_INDEX, compress_section([spatial], _whole(INDEX_BLOCK_SIZE, _NODE), level, threads, _NODE)),
        (schema.SectionId.ADDRESS_INDEX, compress_section([address], _whole(INDEX_BLOCK_SIZE, _ADDRESS), level, threads, _ADDRESS)),
        (schema.SectionId.IIDS, iids),
        (schema.SectionId.SEGS, segs),
    ]
    return _writer.write_sectioned(out, 2, rformat, count, sections, _section_crc)


def _section_crc(sid: int, parts: list[bytes]) -> int:
    """A blocked section's CRC is of its 20-byte head (each block has its
    own, in its table row); a plain one's of its bytes."""
    from crc32c import crc32c

    return crc32c(parts[0][: schema.BLOCKED_HEAD2_SIZE]) if sid in schema.BLOCKED_SECTIONS2 else crc32c(b"".join(parts))
