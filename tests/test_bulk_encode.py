"""Bulk encoding and decoding: ``encode_many`` / ``decode_many`` of the
built-in codecs, the bulk ``"auto"`` choice, bulk tight bboxes, and the bulk
path of the version-1 writer, each against its one-mask-at-a-time original
(which must give exactly the same bytes and masks)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema.codecs.packbits as packbits_mod
from iidschema import IIDFile, writer
from iidschema.codecs import (
    BulkEncoder,
    decode_many,
    encode_auto,
    encode_auto_many,
    encode_many,
    encoder_for,
    encoder_many_for,
    get_codec,
)
from iidschema.codecs.packbits import pack_masks
from iidschema.codecs.rle import runs_of, runs_of_packed
from iidschema.errors import IIDCodecError
from iidschema.masks import tight_bbox, tight_bboxes_of_runs
from iidschema.strategies import iid_files, masks, serialise

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BUILTINS = ["packbits", "rle", "zstd"]
mask_lists = st.lists(masks(max_side=40), max_size=12)


def _same_masks(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == np.bool_ and g.shape == w.shape and g.flags.c_contiguous
        assert np.array_equal(g, w)


def _decode_many_agrees(codec: Any, buffers: list, shapes: list) -> None:
    """decode_many refuses what decode refuses, and else decodes the same."""
    try:
        want = [codec.decode(b, s) for b, s in zip(buffers, shapes)]
    except IIDCodecError:
        with pytest.raises(IIDCodecError):
            codec.decode_many(buffers, shapes)
    else:
        _same_masks(codec.decode_many(buffers, shapes), want)


# -- encode_many / decode_many ----------------------------------------------------


@SETTINGS
@given(ms=mask_lists)
@pytest.mark.parametrize("name", BUILTINS)
def test_encode_many_equals_encode(name: str, ms: list[np.ndarray]) -> None:
    codec = get_codec(name)
    payloads = codec.encode_many(ms)
    assert payloads == [codec.encode(m) for m in ms]
    assert all(type(p) is bytes for p in payloads)
    _same_masks(codec.decode_many(payloads, [m.shape for m in ms]), ms)


@SETTINGS
@given(ms=mask_lists)
def test_runs_of_packed_and_tight_bboxes_equal_the_one_mask_versions(ms: list[np.ndarray]) -> None:
    pm = pack_masks(ms)
    assert pm.packed.tobytes() == b"".join(get_codec("packbits").encode(m) for m in ms)
    runs, offsets = runs_of_packed(pm)
    boxes = tight_bboxes_of_runs(runs, offsets, pm.widths)
    for i, m in enumerate(ms):
        assert np.array_equal(runs[offsets[i] : offsets[i + 1]], runs_of(m))
        box = tight_bbox(m, (0, 0))
        assert tuple(boxes[i]) == ((-1, -1, -1, -1) if box is None else box)


def test_encode_many_accepts_other_layouts_and_dtypes() -> None:
    rng = np.random.default_rng(1)
    base = rng.random((13, 11)) < 0.4
    inputs = [base.T, np.asfortranarray(base), base.astype(np.uint8) * 3, base[::2, ::3], base.tolist()]
    for name in BUILTINS:
        codec = get_codec(name)
        assert codec.encode_many(inputs) == [codec.encode(np.asarray(m)) for m in inputs]


def test_empty_zero_sized_and_huge_masks() -> None:
    chunk = packbits_mod.CHUNK_PIXELS
    ms = [
        np.zeros((0, 0), bool),
        np.zeros((0, 9), bool),
        np.zeros((7, 0), bool),
        np.zeros((3, 3), bool),
        np.ones((1, 1), bool),
        np.ones((1, chunk + 13), bool),  # larger than one packing chunk
        np.zeros((3, 5), bool),
    ]
    ms[5][0, ::997] = False
    for name in BUILTINS:
        codec = get_codec(name)
        payloads = codec.encode_many(ms)
        assert payloads == [codec.encode(m) for m in ms]
        _same_masks(codec.decode_many(payloads, [m.shape for m in ms]), ms)
        assert codec.encode_many([]) == [] and codec.decode_many([], []) == []
    assert encode_auto_many(ms) == [encode_auto(m) for m in ms]


def test_chunking_does_not_change_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    ms = [rng.random((int(h), int(w))) < 0.3 for h, w in rng.integers(0, 30, (200, 2))]
    want = pack_masks(ms).packed.tobytes()
    monkeypatch.setattr(packbits_mod, "CHUNK_PIXELS", 64)
    assert pack_masks(ms).packed.tobytes() == want
    assert get_codec("rle").encode_many(ms) == [get_codec("rle").encode(m) for m in ms]


@SETTINGS
@given(ms=st.lists(masks(max_side=24), min_size=1, max_size=6), data=st.data())
@pytest.mark.parametrize("name", BUILTINS)
def test_decode_many_fails_exactly_when_decode_fails(name: str, ms: list[np.ndarray], data: st.DataObject) -> None:
    codec = get_codec(name)
    payloads = [bytearray(p) for p in codec.encode_many(ms)]
    shapes = [m.shape for m in ms]
    i = data.draw(st.integers(0, len(ms) - 1))
    how = data.draw(st.sampled_from(["truncate", "extend", "flip", "shape"]))
    if how == "truncate" and payloads[i]:
        del payloads[i][-1]
    elif how == "extend":
        payloads[i] += data.draw(st.binary(min_size=1, max_size=3))
    elif how == "flip" and payloads[i]:
        j = data.draw(st.integers(0, len(payloads[i]) - 1))
        payloads[i][j] ^= data.draw(st.integers(1, 255))
    else:
        h, w = shapes[i]
        shapes[i] = (h + 1, w)
    buffers = [bytes(p) for p in payloads]
    _decode_many_agrees(codec, buffers, shapes)


@pytest.mark.parametrize("name", BUILTINS)
def test_decode_many_refuses_mismatched_counts_and_bad_shapes(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(IIDCodecError):
        codec.decode_many([b"\x00"], [])
    with pytest.raises(IIDCodecError):
        codec.decode_many([b"\x00"], [(-1, 3)])
    with pytest.raises(IIDCodecError):
        codec.decode_many([b"\x00"], [(2**40, 2**40)])


def test_rle_decode_many_checks_each_buffer_on_its_own() -> None:
    rle = get_codec("rle")
    ok = rle.encode(np.array([[False, True]]))
    # A varint may not continue into the next buffer.
    with pytest.raises(IIDCodecError, match="truncated"):
        rle.decode_many([b"\x81", b"\x01"], [(1, 1), (1, 1)])
    # A zero run is allowed first in every buffer, never later.
    assert [m.tolist() for m in rle.decode_many([b"\x00\x01", b"\x00\x01"], [(1, 1), (1, 1)])] == [[[True]], [[True]]]
    with pytest.raises(IIDCodecError, match="zero-length run"):
        rle.decode_many([ok, b"\x01\x00"], [(1, 2), (1, 1)])
    # Non-canonical varint.
    with pytest.raises(IIDCodecError):
        rle.decode_many([ok, b"\x81\x00"], [(1, 2), (1, 1)])
    # Sums are per buffer: moving a pixel from one buffer to the next fails.
    with pytest.raises(IIDCodecError):
        rle.decode_many([b"\x03", b"\x01"], [(1, 2), (1, 2)])
    # An empty mask has an empty payload, and the other way round.
    with pytest.raises(IIDCodecError):
        rle.decode_many([b"\x00"], [(0, 3)])
    with pytest.raises(IIDCodecError):
        rle.decode_many([b""], [(1, 3)])
    assert rle.decode_many([b""], [(0, 3)])[0].shape == (0, 3)


def test_rle_decode_many_bounds_before_allocating() -> None:
    rle = get_codec("rle")
    huge = rle.encode(np.zeros((1, 1), bool))[:0] + bytes([0xFF] * 8 + [0x7F])  # ~2**63 pixels
    with pytest.raises(IIDCodecError):
        rle.decode_many([huge], [(60000, 60000)])


# -- bulk "auto" ----------------------------------------------------------------


@SETTINGS
@given(ms=mask_lists)
def test_bulk_auto_picks_the_same_codec_and_bytes(ms: list[np.ndarray]) -> None:
    assert encode_auto_many(ms) == [encode_auto(m) for m in ms]
    assert encode_auto_many(ms, ["rle", "zstd"]) == [encode_auto(m, ["rle", "zstd"]) for m in ms]
    for name in BUILTINS:
        assert encoder_many_for(name)(ms) == [encoder_for(name)(m) for m in ms]


class _Transposed:
    """A third-party codec with no ``encode_many``/``decode_many`` (duck-typed)."""

    id = 40123
    name = "transposed-test"

    def encode(self, mask: np.ndarray) -> bytes:
        m = np.asarray(mask, dtype=bool)
        return bytes([m.shape[0] & 0xFF]) + np.packbits(m.T.ravel()).tobytes()

    def decode(self, buffer: bytes, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        bits = np.unpackbits(np.frombuffer(bytes(buffer)[1:], np.uint8), count=h * w).view(bool)
        return np.ascontiguousarray(bits.reshape(w, h).T)


def test_third_party_codec_without_bulk_methods() -> None:
    codec = _Transposed()
    rng = np.random.default_rng(3)
    ms = [rng.random((int(h), int(w))) < 0.2 for h, w in rng.integers(0, 20, (50, 2))]
    payloads = encode_many(codec, ms)
    assert payloads == [codec.encode(m) for m in ms]
    _same_masks(decode_many(codec, payloads, [m.shape for m in ms]), ms)
    assert BulkEncoder(codec)(ms) == [(codec.id, codec.encode(m)) for m in ms]
    # As an "auto" candidate it is encoded mask by mask and compared by size.
    got = encode_auto_many(ms, [codec, "rle", "packbits"])
    assert got == [encode_auto(m, [codec, "rle", "packbits"]) for m in ms]


def test_subclass_of_a_builtin_takes_the_generic_path() -> None:
    from iidschema.codecs.rle import RLECodec

    class Shouting(RLECodec):
        id = 40124
        name = "shouting-rle"

        def encode(self, mask: np.ndarray) -> bytes:
            return b"!" + super().encode(mask)

    ms = [np.ones((2, 3), bool), np.zeros((4, 4), bool)]
    assert BulkEncoder(Shouting())(ms) == [(40124, b"!" + get_codec("rle").encode(m)) for m in ms]


# -- the version-1 writer -----------------------------------------------------------


def _save_both_ways(f: IIDFile, codec: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    bulk = serialise(f, 1, codec)
    with monkeypatch.context() as mp:
        mp.setattr(writer, "_BULK", False)
        one_by_one = serialise(f, 1, codec)
    return bulk, one_by_one


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(f=iid_files(version=1, max_entries=8, max_side=40), codec=st.sampled_from(["auto", *BUILTINS]))
def test_bulk_writer_writes_the_same_bytes(f: IIDFile, codec: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        bulk, one_by_one = _save_both_ways(f, codec, mp)
    assert bulk == one_by_one


@pytest.mark.parametrize("parallel_min", [10**9, 2])  # one thread; two halves on two threads
def test_bulk_writer_batches_and_odd_segments(monkeypatch: pytest.MonkeyPatch, parallel_min: int) -> None:
    monkeypatch.setattr(writer, "_BULK_BATCH", 7)  # several batches
    monkeypatch.setattr(writer, "_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(4)
    f = IIDFile()
    for i in range(40):
        h, w = (int(v) for v in rng.integers(0, 30, 2))
        if i % 9 == 0:
            h = 0  # a 0-sized bbox
        m = rng.random((h, w)) < rng.choice([0.0, 0.05, 0.5, 1.0])
        r, c = (int(v) for v in rng.integers(0, 1000, 2))
        f.add(b"a%d" % i, b"d", (r, c, r + h, c + w), m, group="g")
    # A segment read back from a file (regions, no source) mixed with added ones.
    bulk, one_by_one = _save_both_ways(f, "auto", monkeypatch)
    assert bulk == one_by_one
    for codec in BUILTINS:
        bulk, one_by_one = _save_both_ways(f, codec, monkeypatch)
        assert bulk == one_by_one


def test_bulk_writer_with_a_third_party_codec(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    rng = np.random.default_rng(5)
    f = IIDFile()
    for i in range(20):
        m = rng.random((5, 6)) < 0.5
        f.add(b"x%d" % i, None, (i, i, i + 5, i + 6), m)
    out = io.BytesIO()
    records = list(f._records())
    writer.write_v1(out, records, len(records), {}, None, codec=_Transposed())
    monkeypatch.setattr(writer, "_BULK", False)
    out2 = io.BytesIO()
    writer.write_v1(out2, records, len(records), {}, None, codec=_Transposed())
    assert out.getvalue() == out2.getvalue()


# -- version 0: components labelled together -----------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(f=iid_files(version=0, max_entries=8, max_side=40), parallel_min=st.sampled_from([10**9, 2]))
def test_v0_batched_components_write_the_same_bytes(f: IIDFile, parallel_min: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer, "_PARALLEL_MIN", parallel_min)
        batched = serialise(f, 0)
        mp.setattr(writer, "_BULK", False)
        one_by_one = serialise(f, 0)
    assert batched == one_by_one


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(ms=st.lists(masks(max_side=12), max_size=10))
def test_single_component_test_is_never_wrong(ms: list[np.ndarray]) -> None:
    from scipy import ndimage

    from iidschema.masks import single_component_of_runs

    pm = pack_masks(ms)
    runs, offsets = runs_of_packed(pm)
    single = single_component_of_runs(runs, offsets, pm.widths)
    for m, one in zip(ms, single):
        if one:
            assert ndimage.label(m, structure=np.ones((3, 3), bool))[1] == 1


def test_single_component_examples() -> None:
    from iidschema.masks import single_component_of_runs

    yy, xx = np.mgrid[:21, :21]
    cases = {
        "disc": (((yy - 10) ** 2 + (xx - 10) ** 2) < 80, True),
        "diagonal": (np.eye(9, dtype=bool), True),
        "anti-diagonal": (np.eye(9, dtype=bool)[::-1].copy(), True),
        "row-end to next row start": (np.array([[0, 0, 1], [1, 0, 0]], bool), False),
        "two blobs in a row": (np.array([[1, 0, 1]], bool), False),
        "gap row": (np.array([[1], [0], [1]], bool), False),
        "empty": (np.zeros((3, 3), bool), False),
        "U": (np.array([[1, 0, 1], [1, 1, 1]], bool), False),  # one component, but not provably so here
    }
    ms = [m for m, _ in cases.values()]
    pm = pack_masks(ms)
    got = single_component_of_runs(*runs_of_packed(pm), pm.widths)
    assert dict(zip(cases, got.tolist())) == {k: v for k, (_, v) in cases.items()}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_bulk_auto_works_in_a_forked_child() -> None:
    """zstd compresses in a background thread; a forked child must get its own."""
    import os

    rng = np.random.default_rng(7)
    ms = [rng.random((30, 30)) < 0.02 for _ in range(600)]  # enough for the background path
    want = encode_auto_many(ms)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if encode_auto_many(ms) == want else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 9), st.integers(0, 9)), max_size=5),
    name=st.sampled_from(BUILTINS),
)
def test_decode_many_of_garbage_agrees_with_decode(items: list[tuple[bytes, int, int]], name: str) -> None:
    codec = get_codec(name)
    buffers = [memoryview(b) for b, _, _ in items]  # any bytes-like input
    shapes = [(h, w) for _, h, w in items]
    _decode_many_agrees(codec, buffers, shapes)
