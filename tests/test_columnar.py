"""``IIDFile.masks()`` (``iidschema.columnar``) against ``fetch()`` + ``mask()``.

The columnar read decodes every region of a codec in one call and places
masks in shared buffers; whatever it returns must be exactly what reading
entry by entry returns (keys, bboxes, areas, every pixel), and on a damaged
file it must raise an ``IIDError`` whenever the entry-by-entry read does.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import bulk
from iidschema.columnar import MaskColumns
from iidschema.strategies import file_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import iidfuzz  # noqa: E402
from test_bulk_read import _workload_file  # noqa: E402

REGRESSIONS = Path(__file__).parent / "regressions"
SEEDS = iidfuzz.seed_files(include_corpus=True)
EXAMPLES = int(os.environ.get("IIDSCHEMA_BULK_EXAMPLES", "40"))
_settings = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                     database=None)


def one_by_one(f: iidschema.IIDFile, keys: list[int]) -> list[tuple]:
    out = []
    for key in keys:
        seg = f._reader.segment(key) if key < f._disk_count else f[key].seg
        out.append((key, seg.bbox, seg.area, seg.mask()))
    return out


def assert_columns_match(cols: MaskColumns, expected: list[tuple]) -> None:
    assert len(cols) == len(expected)
    assert cols.keys.tolist() == [k for k, *_ in expected]
    assert [tuple(b) for b in cols.bboxes.tolist()] == [tuple(b) for _, b, *_ in expected]
    assert cols.areas.tolist() == [a for _, _, a, _ in expected]
    for got, (_, _, _, want) in zip(cols, expected):
        assert got.shape == want.shape and got.dtype == np.bool_
        assert np.array_equal(got, want)


def outcome(data: bytes, what: str) -> tuple:
    """("ok", what a caller sees) or ("error", the IIDError's class)."""
    try:
        f = iidschema.IIDFile(data)
        keys = list(range(len(f)))
        if what == "columns":
            cols = f.masks(iids=True)
            got = [(k, tuple(b), a, np.packbits(m).tobytes(), m.shape, ad, dm) for k, b, a, m, ad, dm in
                   zip(cols.keys.tolist(), cols.bboxes.tolist(), cols.areas.tolist(), cols, cols.addresses, cols.domains)]
        else:
            iids = [f._reader.iid(k) for k in keys]
            got = [(k, tuple(b), a, np.packbits(m).tobytes(), m.shape, iid.address, iid.domain)
                   for (k, b, a, m), iid in zip(one_by_one(f, keys), iids)]
        return ("ok", got)
    except iidschema.IIDError as exc:
        return ("error", type(exc).__name__)


@_settings
@given(data=st.one_of(file_bytes(version=0, max_entries=12, max_side=24), file_bytes(version=1, max_entries=12, max_side=24),
                      file_bytes(version=1, codec="rle", max_entries=12, max_side=24),
                      file_bytes(version=1, codec="zstd", max_entries=8, max_side=24),
                      file_bytes(version=1, codec="packbits", max_entries=8, max_side=24),
                      file_bytes(version=2, max_entries=12, max_side=24),
                      file_bytes(version=2, codec="rle", max_entries=8, max_side=24)))
def test_columns_are_what_entries_give(data: bytes) -> None:
    assert outcome(data, "columns") == outcome(data, "entries")


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files(name: str) -> None:
    assert outcome(SEEDS[name], "columns") == outcome(SEEDS[name], "entries")


@_settings
@given(data=st.data())
def test_damaged_files_fail_alike(data: Any) -> None:
    """A mutated file gives the same masks both ways, or an IIDError both ways."""
    name = data.draw(st.sampled_from(sorted(SEEDS)))
    base = SEEDS[name]
    n = len(base)
    ops = [
        st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(0, 7)),
        st.tuples(st.just("byte"), st.integers(0, n - 1), st.integers(0, 255)),
        st.tuples(st.just("truncate"), st.integers(0, n)),
    ]
    fields = iidfuzz.field_map(base)
    if fields:
        ops.append(st.tuples(st.just("field"), st.sampled_from(fields), st.sampled_from(iidfuzz.SPECIAL_VALUES)))
    mutations = data.draw(st.lists(st.one_of(ops), min_size=1, max_size=3))
    fix = iidfuzz._u32(base, 0) == 1 and data.draw(st.booleans())
    damaged = iidfuzz.mutate(base, mutations, fix)
    columns, entries = outcome(damaged, "columns"), outcome(damaged, "entries")
    assert columns[0] == entries[0]
    if columns[0] == "ok":
        assert columns == entries


@pytest.mark.parametrize("version,codec", [(0, "auto"), (1, "auto"), (1, "rle"), (1, "zstd"), (1, "packbits")])
def test_mixed_workload(version: int, codec: str) -> None:
    data = _workload_file(version, codec)
    f = iidschema.IIDFile(data)
    assert_columns_match(f.masks(), one_by_one(f, list(range(len(f)))))


@pytest.mark.parametrize("chunk,slice_above", [(7, 0), (7, 10**9), (1 << 20, 4)])
def test_placement_paths_agree(chunk: int, slice_above: int, monkeypatch: Any) -> None:
    """Tiny placement chunks, every region placed by slicing, every region
    placed pixel by pixel: the same masks."""
    monkeypatch.setattr(bulk, "PLACE_CHUNK", chunk)
    monkeypatch.setattr(bulk, "PLACE_SLICE", slice_above)
    for version in (0, 1):
        f = iidschema.IIDFile(_workload_file(version, n=120))
        assert_columns_match(f.masks(), one_by_one(f, list(range(len(f)))))


def test_selection_by_keys_and_groups() -> None:
    f = iidschema.IIDFile(_workload_file(1, n=80))
    expected = dict((k, rest) for k, *rest in one_by_one(f, list(range(len(f)))))
    g1 = f.groups.keys("g1").tolist()
    for cols, keys in [
        (f.masks(keys=[5, 3, 3, 70]), [3, 5, 70]),
        (f.masks(keys=7), [7]),
        (f.masks(groups="g1"), g1),
        (f.masks(keys=[0], groups=["g1"]), sorted({0, *g1})),
        (f.masks(keys=[]), []),
    ]:
        assert_columns_match(cols, [(k, *expected[k]) for k in keys])
    with pytest.raises(KeyError):
        f.masks(keys=[len(f)])


def test_entries_added_in_memory_are_included(tmp_path: Path) -> None:
    path = tmp_path / "f.iid"
    path.write_bytes(_workload_file(1, n=40))
    f = iidschema.open(path)
    m = np.zeros((5, 7), dtype=bool)
    m[1:4, 2:6] = True
    added = f.add(b"new", b"d", (10, 10, 15, 17), m, group="g0")
    empty = f.add(b"empty", b"d", (0, 0, 0, 0), np.zeros((0, 0), dtype=bool))
    cols = f.masks()
    assert len(cols) == 42
    assert np.array_equal(cols.mask(added.key), m)
    assert cols.mask(empty.key).shape == (0, 0)
    assert_columns_match(cols, one_by_one(f, list(range(len(f)))))
    assert added.key in f.masks(groups="g0").keys
    f.close()


def test_in_memory_file() -> None:
    f = iidschema.IIDFile()
    masks = [np.eye(3, dtype=bool), np.ones((2, 4), dtype=bool)]
    for i, m in enumerate(masks):
        f.add(b"a%d" % i, None, (i, i, i + m.shape[0], i + m.shape[1]), m)
    cols = f.masks()
    assert [c.tolist() for c in cols] == [m.tolist() for m in masks]
    assert cols.areas.tolist() == [3, 8]


def test_entries_added_in_bulk_are_included(tmp_path: Path) -> None:
    """Entries of ``add_many()`` (kept as columns until saved), before and
    after saving, beside entries read from disk."""
    path = tmp_path / "f.iid"
    path.write_bytes(_workload_file(0, n=40))
    f = iidschema.open(path)
    rng = np.random.default_rng(3)
    masks = [rng.random((int(h), int(w))) < 0.5 for h, w in rng.integers(1, 12, size=(50, 2))]
    boxes = np.array([(i, i, i + m.shape[0], i + m.shape[1]) for i, m in enumerate(masks)], dtype=np.int64)
    keys = f.add_many([b"m%d" % i for i in range(50)], b"d", boxes, masks, groups="bulk")
    cols = f.masks()
    assert len(cols) == 90
    assert all(np.array_equal(cols.mask(k), m) for k, m in zip(keys, masks))
    assert_columns_match(cols, one_by_one(f, list(range(len(f)))))
    assert f.masks(groups="bulk").keys.tolist() == list(keys)
    f.save(tmp_path / "g.iid", version=1)
    assert all(np.array_equal(f.masks(keys=keys).mask(k), m) for k, m in zip(keys, masks))
    f.close()


def test_iids_come_along_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "f.iid"
    path.write_bytes(_workload_file(1, n=60))
    f = iidschema.open(path)
    f.add(b"new", None, (0, 0, 1, 1), np.ones((1, 1), bool))
    plain = f.masks()
    assert plain.addresses is None and plain.domains is None
    cols = f.masks(keys=[0, 7, 60], iids=True)
    entries = f.fetch(keys=[0, 7, 60])
    assert cols.addresses == [e.iid.address for e in entries]
    assert cols.domains == [e.iid.domain for e in entries]
    assert cols.addresses[-1] == b"new" and cols.domains[-1] == b""
    f.close()


def test_mask_columns_api() -> None:
    f = iidschema.IIDFile(_workload_file(1, n=50))
    cols = f.masks(keys=[2, 4, 9])
    assert len(cols) == 3 and "3 masks" in repr(cols)
    assert cols.shapes.tolist() == [list(m.shape) for m in cols]
    assert cols.pixel_count == sum(m.size for m in cols)
    assert np.array_equal(cols[-1], cols[2]) and np.array_equal(cols.mask(9), cols[2])
    assert cols.index(4) == 1
    with pytest.raises(IndexError):
        cols[3]
    with pytest.raises(TypeError):
        cols["0"]  # type: ignore[index]
    with pytest.raises(KeyError):
        cols.mask(3)
    # Views share the buffers: writing one shows through the other.
    view = cols[0]
    if view.size:
        view[0, 0] = not view[0, 0]
        assert cols[0][0, 0] == view[0, 0]


def test_columns_outlive_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.iid"
    path.write_bytes(_workload_file(0, n=60))
    f = iidschema.open(path)
    expected = one_by_one(f, list(range(len(f))))
    cols = f.masks()
    f.close()
    assert_columns_match(cols, expected)


def test_pixel_limit_is_checked_before_decoding() -> None:
    f = iidschema.IIDFile(_workload_file(1, n=50))
    total = f.masks().pixel_count
    assert len(f.masks(max_pixels=total)) == 50
    with pytest.raises(iidschema.IIDLimitError, match="max_pixels"):
        f.masks(max_pixels=total // 2)


def test_overlapping_region_bomb_is_read_region_by_region() -> None:
    """A 2.5 KB segment of 64 overlapping 512 x 512 regions: decoded one
    region at a time (as ``mask()`` does), never all 16 M pixels at once."""
    data = (REGRESSIONS / "v1-overlapping-regions-amplification.iid").read_bytes()
    f = iidschema.IIDFile(data)
    tracemalloc.start()
    try:
        cols = f.masks()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 512 * 512 + 2**20
    assert_columns_match(cols, one_by_one(f, list(range(len(f)))))
    assert bulk.EAGER_OVERLAP * 512 * 512 < 64 * 512 * 512


def test_a_codec_refusing_in_bulk_falls_back_to_one_by_one(monkeypatch: Any) -> None:
    """When a bulk decode fails (a malformed payload somewhere), that codec's
    masks are read one record at a time, so the error (if any) is the one
    ``mask()`` raises, naming the record; good masks still come out right."""
    import iidschema.codecs.bulk as codecs_bulk

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise iidschema.IIDCodecError("refused")

    f = iidschema.IIDFile(_workload_file(1, n=60))
    expected = one_by_one(f, list(range(len(f))))
    monkeypatch.setattr(codecs_bulk, "decode_flat", refuse)
    assert_columns_match(f.masks(), expected)


def test_damaged_payload_is_reported_like_mask() -> None:
    data = bytearray(_workload_file(0, n=40))  # version 0: no CRC in the way
    f = iidschema.IIDFile(bytes(data))
    offs, _, _ = f._reader._locate_rows(np.arange(len(f)), "seg")
    table = bulk.segment_table(f._reader, np.arange(len(f)))
    j = int(np.argmax(table.rlen > 2))
    data[int(offs.min()) + int(table.roff[j])] ^= 0xFF
    assert outcome(bytes(data), "columns") == outcome(bytes(data), "entries")
