"""Mask codecs: exact round trips of every registered codec, bounded decoding,
the byte formats of the built-ins, and automatic codec choice."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iidschema.codecs import (
    CodecSpec,
    available_codecs,
    builtin_codec_ids,
    encode_auto,
    encoder_for,
    get_codec,
    resolve_codec,
)
from iidschema.codecs.base import check_shape, packed_size
from iidschema.codecs.rle import decode_varints, encode_varints, rle_decode, rle_encode, runs_of
from iidschema.codecs.zstd import ZstdCodec
from iidschema.errors import IIDCodecError, IIDFormatError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def all_codecs():
    return [get_codec(spec.id) for spec in available_codecs()]


CODEC_IDS = [spec.id for spec in available_codecs()]


# --- mask shapes ----------------------------------------------------------------


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@st.composite
def masks(draw) -> np.ndarray:
    """One mask of every shape class the codecs must handle."""
    kind = draw(
        st.sampled_from(["empty", "false", "full", "row", "col", "checker", "noise", "sparse", "blob", "pixel"])
    )
    small = st.integers(1, 40)
    if kind == "empty":
        h, w = draw(st.sampled_from([(0, 0), (0, 7), (5, 0)]))
        return np.zeros((h, w), dtype=bool)
    if kind == "row":
        h, w = 1, draw(st.integers(1, 300))
    elif kind == "col":
        h, w = draw(st.integers(1, 300)), 1
    else:
        h, w = draw(small), draw(small)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "false":
        return np.zeros((h, w), dtype=bool)
    if kind == "full":
        return np.ones((h, w), dtype=bool)
    if kind == "checker":
        return (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(bool) ^ bool(seed & 1)
    if kind == "pixel":
        m = np.zeros((h, w), dtype=bool)
        m[rng.integers(h), rng.integers(w)] = True
        return m
    if kind == "blob":
        return disk(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w)))
    p = 0.05 if kind == "sparse" else 0.5
    return rng.random((h, w)) < p


FIXED = {
    "empty-0x0": np.zeros((0, 0), bool),
    "empty-0x5": np.zeros((0, 5), bool),
    "empty-5x0": np.zeros((5, 0), bool),
    "all-false": np.zeros((17, 23), bool),
    "full": np.ones((17, 23), bool),
    "1x1-false": np.zeros((1, 1), bool),
    "1x1-true": np.ones((1, 1), bool),
    "1xN": np.arange(1000).reshape(1, 1000) % 3 == 0,
    "Nx1": np.arange(1000).reshape(1000, 1) % 7 < 3,
    "checkerboard": np.add.outer(np.arange(64), np.arange(65)) % 2 == 1,
    "noise": np.random.default_rng(1).random((99, 101)) < 0.5,
    "disk-300x400": disk(300, 400, 150, 200, 120),
    "huge-run": np.ones((200, 200), bool),  # a run of 40000: a three-byte varint
    "single-pixel": np.pad(np.ones((1, 1), bool), ((40, 2), (3, 50))),
    "last-pixel": np.pad(np.ones((1, 1), bool), ((9, 0), (9, 0))),
}


# --- round trips ------------------------------------------------------------------


@SETTINGS
@given(mask=masks())
@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_every_codec_round_trips_every_shape_class(codec_id, mask):
    codec = get_codec(codec_id)
    payload = codec.encode(mask)
    assert isinstance(payload, bytes)
    out = codec.decode(payload, mask.shape)
    assert out.dtype == np.bool_ and out.shape == mask.shape
    assert np.array_equal(out, mask)
    # memoryview payloads (mmap'ed files) decode the same
    assert np.array_equal(codec.decode(memoryview(payload), mask.shape), mask)


@pytest.mark.parametrize("name", sorted(FIXED))
@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_fixed_masks_round_trip(codec_id, name):
    codec = get_codec(codec_id)
    mask = FIXED[name]
    out = codec.decode(codec.encode(mask), mask.shape)
    assert out.shape == mask.shape and out.dtype == np.bool_
    assert np.array_equal(out, mask)


@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_encode_accepts_bool_convertible_and_any_memory_layout(codec_id):
    codec = get_codec(codec_id)
    base = FIXED["noise"]
    ref = codec.encode(base)
    assert codec.encode(base.astype(np.uint8) * 255) == ref
    assert codec.encode(base.astype(np.float32)) == ref
    assert codec.encode(np.asfortranarray(base)) == ref
    assert codec.encode(base.tolist()) == ref
    view = FIXED["disk-300x400"][::3, ::-2]  # not contiguous: encoded in C (row-major) order
    assert np.array_equal(codec.decode(codec.encode(view), view.shape), view)
    with pytest.raises(IIDCodecError):
        codec.encode(np.zeros((2, 3, 4), bool))
    with pytest.raises(IIDCodecError):
        codec.encode(np.zeros(5, bool))


# --- packbits -----------------------------------------------------------------------


@SETTINGS
@given(mask=masks())
def test_packbits_is_byte_identical_to_numpy_packbits(mask):
    assert get_codec("packbits").encode(mask) == np.packbits(mask.ravel()).tobytes()
    assert len(get_codec(0).encode(mask)) == packed_size(mask.size)


def test_packbits_rejects_wrong_sizes():
    codec = get_codec(0)
    good = codec.encode(FIXED["noise"])
    for bad in (good[:-1], good + b"\0", b"", good * 2):
        with pytest.raises(IIDCodecError, match="packbits"):
            codec.decode(bad, FIXED["noise"].shape)
    assert codec.decode(b"", (0, 9)).shape == (0, 9)


# --- rle byte format ----------------------------------------------------------------


def test_rle_byte_format_examples():
    rle = get_codec("rle")
    assert rle.id == 1
    assert rle.encode(np.zeros((0, 4), bool)) == b""
    assert rle.encode(np.zeros((3, 4), bool)) == bytes([12])
    assert rle.encode(np.ones((3, 4), bool)) == bytes([0, 12])
    assert rle.encode(np.array([[0, 1, 1], [0, 0, 1]], bool)) == bytes([1, 2, 2, 1])
    # 300 = 0b10_0101100 -> 0xAC 0x02 (LEB128, low group first)
    assert rle.encode(np.zeros((1, 300), bool)) == b"\xac\x02"
    assert rle.encode(np.ones((200, 200), bool)) == b"\x00" + bytes([0xC0, 0xB8, 0x02])  # 40000


@SETTINGS
@given(values=st.lists(st.integers(1, 2**63 - 1) | st.integers(1, 300), max_size=50), first=st.integers(0, 2**40))
def test_varints_round_trip(values, first):
    arr = np.array([first] + values, dtype=np.int64)
    data = encode_varints(arr)
    # reference LEB128
    ref = bytearray()
    for v in arr.tolist():
        while True:
            byte, v = v & 0x7F, v >> 7
            ref.append(byte | (0x80 if v else 0))
            if not v:
                break
    assert data == bytes(ref)
    assert decode_varints(data).tolist() == arr.tolist()


@SETTINGS
@given(mask=masks())
def test_runs_alternate_starting_with_false(mask):
    runs = runs_of(mask)
    assert int(runs.sum()) == mask.size
    if mask.size:
        assert (runs[1:] > 0).all()
        assert (runs[0] == 0) == bool(mask.ravel()[0])
        assert np.array_equal(np.repeat(np.arange(runs.size) % 2 == 1, runs), mask.ravel())
    else:
        assert runs.size == 0


@pytest.mark.parametrize(
    "payload, shape, why",
    [
        (b"", (2, 2), "0 runs"),
        (b"\x04", (0, 4), "1 runs"),
        (b"\x03", (2, 2), "decodes to 3"),
        (b"\x05", (2, 2), "decodes to 5"),
        (b"\x02\x02\x01", (2, 2), "decodes to 5"),
        (b"\x01\x00\x03", (2, 2), "zero-length run"),
        (b"\x00\x00\x04", (2, 2), "zero-length run"),
        (b"\x84", (2, 2), "truncated"),
        (b"\x01\x83", (2, 2), "truncated"),
        (b"\x84\x00", (2, 2), "non-canonical"),  # 4 written in two bytes
        (b"\x80\x00\x04", (2, 2), "non-canonical"),  # a zero first run written in two bytes
        (b"\x04\x00", (2, 2), "zero-length run"),  # trailing garbage
        (b"\x04\x01", (2, 2), "decodes to 5"),  # trailing garbage
        (b"\xff" * 9 + b"\x01", (2, 2), "varint of 10 bytes"),
        (b"\xff" * 20 + b"\x01", (2, 2), "varint of 21 bytes"),
    ],
)
def test_rle_rejects_malformed_payloads(payload, shape, why):
    with pytest.raises(IIDCodecError, match=why):
        get_codec("rle").decode(payload, shape)


# --- zstd -------------------------------------------------------------------------------


def test_zstd_is_packbits_in_one_frame_with_content_size():
    mask = FIXED["disk-300x400"]
    frame = get_codec("zstd").encode(mask)
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == packed_size(mask.size)
    assert zstandard.ZstdDecompressor().decompress(frame) == np.packbits(mask.ravel()).tobytes()
    # any compression level decodes with the registered codec
    strong = ZstdCodec(level=19).encode(mask)
    assert np.array_equal(get_codec(2).decode(strong, mask.shape), mask)


def test_zstd_rejects_bad_frames():
    codec = get_codec("zstd")
    mask = FIXED["noise"]
    raw = np.packbits(mask.ravel()).tobytes()
    good = codec.encode(mask)
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    with pytest.raises(IIDCodecError, match="content size"):
        codec.decode(no_size, mask.shape)
    with pytest.raises(IIDCodecError, match="declares"):
        codec.decode(good, (mask.shape[0] + 8, mask.shape[1]))
    with pytest.raises(IIDCodecError):
        codec.decode(good[: len(good) // 2], mask.shape)
    with pytest.raises(IIDCodecError):
        codec.decode(good + b"\0\0\0", mask.shape)
    with pytest.raises(IIDCodecError):
        codec.decode(good + good, mask.shape)
    with pytest.raises(IIDCodecError):
        codec.decode(b"not a zstd frame at all", mask.shape)
    with pytest.raises(IIDCodecError):
        codec.decode(b"", mask.shape)
    # a frame declaring the right size whose blocks hold something else
    other = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(len(raw) - 1) + b"\x80")
    decoded = codec.decode(other, mask.shape).ravel()
    assert decoded.sum() == 1 and decoded[8 * (len(raw) - 1)]
    longer = bytearray(zstandard.ZstdCompressor().compress(bytes(len(raw) + 5)))
    longer[5] = len(raw) & 0xFF  # patch the (1-byte) content size field down
    with pytest.raises(IIDCodecError):
        codec.decode(bytes(longer), mask.shape)


# --- bounded decoding -------------------------------------------------------------------


def _zstd_frame_claiming(content_size: int) -> bytes:
    """A frame header that declares ``content_size`` bytes, then a tiny RLE block."""
    # magic, descriptor: FCS field 8 bytes (flag 3), single segment
    header = b"\x28\xb5\x2f\xfd" + bytes([0b11100000]) + content_size.to_bytes(8, "little")
    block = bytes([0b011, 0, 0]) + b"\0"  # last block, RLE, size 0 (repeat 1 byte 0 times)
    return header + block


def _rle_claiming(pixels: int) -> bytes:
    return encode_varints(np.array([pixels], dtype=np.int64))


HOSTILE = [
    ("packbits", b"\xff" * 100, (65535, 65535)),
    ("packbits", b"", (2**31, 2**31)),
    ("rle", _rle_claiming(2**60), (4, 4)),
    ("rle", _rle_claiming(2**60 + 1), (2**30, 2**30)),
    ("rle", _rle_claiming(2**16 * (2**16 + 1)), (2**16, 2**16 + 1)),  # consistent, but over MAX_MASK_PIXELS
    ("rle", _rle_claiming(2**62) * 8, (2**31, 2**31)),  # sums overflow int64
    ("rle", b"\x00" + _rle_claiming(2**40) * 30, (65535, 65535)),
    ("rle", bytes(range(256)) * 4, (65535, 65535)),
    ("rle", b"\x81" * 100, (65535, 65535)),
    ("zstd", _zstd_frame_claiming(2**40), (3, 3)),
    ("zstd", _zstd_frame_claiming(2**40), (2**20, 2**23)),
    ("zstd", _zstd_frame_claiming(2**60), (65535, 65535)),
    ("zstd", _zstd_frame_claiming(packed_size(65535 * 65535)), (65535, 65535)),  # 512 MB claimed
    ("zstd", b"\x28\xb5\x2f\xfd" + b"\xff" * 96, (65535, 65535)),
    ("zstd", bytes(100), (65535, 65535)),
]


@pytest.mark.parametrize("codec_name, payload, shape", HOSTILE)
def test_hostile_payloads_fail_fast_without_big_allocations(codec_name, payload, shape):
    codec = get_codec(codec_name)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(IIDCodecError):
            codec.decode(payload, shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 4 * 2**20, f"decoding a {len(payload)}-byte payload peaked at {peak} bytes"


@SETTINGS
@given(garbage=st.binary(max_size=200), h=st.integers(0, 70), w=st.integers(0, 70))
@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_garbage_either_decodes_to_shape_or_raises_codec_error(codec_id, garbage, h, w):
    codec = get_codec(codec_id)
    try:
        out = codec.decode(garbage, (h, w))
    except IIDCodecError:
        return
    assert out.shape == (h, w) and out.dtype == np.bool_


@SETTINGS
@given(mask=masks(), data=st.data())
@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_truncated_or_extended_payloads_never_crash(codec_id, mask, data):
    codec = get_codec(codec_id)
    payload = codec.encode(mask)
    cut = data.draw(st.integers(0, max(len(payload) - 1, 0)))
    for bad in (payload[:cut], payload + data.draw(st.binary(min_size=1, max_size=4))):
        try:
            out = codec.decode(bad, mask.shape)
        except IIDCodecError:
            continue
        assert out.shape == mask.shape  # (packbits padding bits, say) but never another size


@pytest.mark.parametrize(
    "shape", [(-1, 4), (4, -1), (2.0, 3), (True, 3), (1, 2, 3), (5,), "ab", None, (np.int64(-2), 1)]
)
@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_bad_shapes_are_refused(codec_id, shape):
    with pytest.raises(IIDCodecError):
        get_codec(codec_id).decode(b"\x00", shape)


def test_shape_accepts_numpy_ints():
    assert check_shape((np.int32(3), np.uint16(4))) == (3, 4)
    assert get_codec("rle").decode(b"\x0c", (np.int64(3), np.int64(4))).shape == (3, 4)


def test_codec_errors_are_format_errors():
    with pytest.raises(IIDFormatError):
        rle_decode(b"\x05", (2, 2))
    assert rle_encode(np.zeros((2, 2))) == b"\x04"


# --- choosing codecs ------------------------------------------------------------------------


@SETTINGS
@given(mask=masks())
def test_encode_auto_picks_the_smallest_builtin_lowest_id_on_ties(mask):
    cid, payload = encode_auto(mask)
    sizes = {i: len(get_codec(i).encode(mask)) for i in builtin_codec_ids()}
    best = min(sizes.values())
    assert len(payload) == best
    assert cid == min(i for i, s in sizes.items() if s == best)
    assert np.array_equal(get_codec(cid).decode(payload, mask.shape), mask)


def test_encode_auto_examples_and_candidates():
    assert builtin_codec_ids() == [0, 1, 2]
    assert encode_auto(np.zeros((0, 0), bool)) == (0, b"")  # tie on 0 bytes: lowest id
    assert encode_auto(np.zeros((1, 1), bool)) == (0, b"\x00")  # tie on 1 byte
    assert encode_auto(FIXED["disk-300x400"])[0] in (1, 2)  # a big blob is never packbits
    assert encode_auto(FIXED["noise"])[0] == 0  # noise does not compress
    cid, _ = encode_auto(FIXED["noise"], candidates=["rle", "zstd"])
    assert cid in (1, 2)
    assert encode_auto(FIXED["disk-300x400"], candidates=[1])[0] == 1
    with pytest.raises(IIDCodecError):
        encode_auto(FIXED["noise"], candidates=[])
    with pytest.raises(IIDCodecError):
        encode_auto(FIXED["noise"], candidates=["auto"])


def test_resolve_codec_and_encoder_for():
    rle = get_codec(1)
    assert resolve_codec(1) is rle
    assert resolve_codec(np.uint16(1)) is rle
    assert resolve_codec("rle") is rle and resolve_codec("RLE") is rle
    assert resolve_codec(rle) is rle
    assert resolve_codec("auto") is None and resolve_codec("AUTO") is None
    with pytest.raises(IIDCodecError, match="'nope'"):
        resolve_codec("nope")
    with pytest.raises(IIDCodecError, match="id 4242"):
        resolve_codec(4242)
    with pytest.raises(IIDCodecError):
        resolve_codec(1.5)
    mask = FIXED["disk-300x400"]
    assert encoder_for("rle")(mask) == (1, rle.encode(mask))
    assert encoder_for("auto")(mask) == encode_auto(mask)


def test_unknown_codec_names_the_id_and_the_available_ones():
    with pytest.raises(IIDCodecError) as err:
        get_codec(777)
    text = str(err.value)
    assert "777" in text and "packbits" in text and "rle" in text and "zstd" in text
    assert "plugin" in text
    with pytest.raises(IIDCodecError, match="lzw"):
        get_codec("lzw")


def test_specs_are_cheap_declarations():
    specs = available_codecs()
    assert [(s.id, s.name) for s in specs] == [(0, "packbits"), (1, "rle"), (2, "zstd")]
    assert all(isinstance(s, CodecSpec) and s.description for s in specs)
    assert get_codec("zstd") is get_codec(2)  # created once, then kept
