"""The public hypothesis strategies and the plugin-author checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import IIDFile, schema
from iidschema import strategies as iss
from iidschema.errors import IIDCodecError
from iidschema.validate import validate

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------

@FAST
@given(iss.masks(max_side=20))
def test_masks_are_2d_contiguous_bool(mask: np.ndarray) -> None:
    assert mask.ndim == 2 and mask.dtype == np.bool_ and mask.flags.c_contiguous
    assert max(mask.shape) <= 20


@pytest.mark.parametrize(
    "cls, predicate",
    [
        ("empty", lambda m: not m.any()),
        ("full", lambda m: m.size > 0 and m.all()),
        ("thin", lambda m: 1 in m.shape and m.size > 0),
        ("checkerboard", lambda m: m.size == 1 or not (m[:, 1:] == m[:, :-1]).any() if m.shape[1] > 1 else True),
        ("blob", lambda m: m.size > 0),
        ("islands", lambda m: not (m[1:, :] & m[:-1, :]).any() and not (m[:, 1:] & m[:, :-1]).any()),
        ("noisy", lambda m: m.size > 0),
    ],
)
def test_each_shape_class(cls: str, predicate) -> None:
    @FAST
    @given(iss.masks(shape_classes=[cls], max_side=24))
    def run(mask: np.ndarray) -> None:
        assert predicate(mask), iss.describe_mask(mask)

    run()


def test_shape_classes_reach_their_edge_cases() -> None:
    assert find(iss.masks(["empty"]), lambda m: m.size == 0 and m.shape != (0, 0)).size == 0  # 0 x n
    assert find(iss.masks(["thin"]), lambda m: m.shape[0] == 1 and m.shape[1] > 8).shape[0] == 1
    assert find(iss.masks(["thin"]), lambda m: m.shape[1] == 1 and m.shape[0] > 8).shape[1] == 1
    from scipy import ndimage

    many = find(iss.masks(["islands"], max_side=16), lambda m: ndimage.label(m, np.ones((3, 3)))[1] >= 10)
    assert ndimage.label(many, np.ones((3, 3)))[1] >= 10


def test_unknown_shape_class_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shape classes"):
        iss.masks(["spiral"])


# --------------------------------------------------------------------------
# bboxes, iids, groups, metadata
# --------------------------------------------------------------------------

@FAST
@given(st.data())
def test_bboxes_fit_the_version(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([0, 1]))
    limit = schema.MAX_COORD_V0 if version == 0 else schema.MAX_COORD_V1
    minr, minc, maxr, maxc = data.draw(iss.bboxes(version=version))
    assert 0 <= minr <= maxr <= limit and 0 <= minc <= maxc <= limit
    shape = data.draw(st.tuples(st.integers(0, 9), st.integers(0, 9)))
    box = data.draw(iss.bboxes(version=version, mask_shape=shape))
    assert (box[2] - box[0], box[3] - box[1]) == shape
    img = data.draw(st.tuples(st.integers(10, 100), st.integers(10, 100)))
    box = data.draw(iss.bboxes(image_shape=img, mask_shape=shape, version=version))
    assert box[2] <= img[0] and box[3] <= img[1]


def test_bboxes_reach_the_limits() -> None:
    assert find(iss.bboxes(version=0), lambda b: b[2] == schema.MAX_COORD_V0)[2] == 65535
    assert find(iss.bboxes(version=1, mask_shape=(2, 2)), lambda b: b[0] > 65535)[0] > 65535


def test_iids_have_empty_domains_and_long_addresses() -> None:
    assert find(iss.iids(), lambda i: i.domain == b"").domain == b""
    assert len(find(iss.iids(), lambda i: len(i.address) >= 1000).address) >= 1000
    assert all(len(i.address) <= 24 for i in [find(iss.iids(long_addresses=False), lambda i: True)])


@FAST
@given(st.integers(0, 6).flatmap(lambda n: st.tuples(st.just(n), iss.groups(n))))
def test_groups_keys_are_in_range_and_sorted(case) -> None:
    n, groups = case
    for name, keys in groups.items():
        assert isinstance(name, str)
        assert keys == sorted(set(keys)) and all(0 <= k < n for k in keys)


@FAST
@given(iss.metadata())
def test_metadata_is_json(meta) -> None:
    assert json.loads(json.dumps(meta)) == meta


def test_metadata_reaches_non_ascii_and_nesting() -> None:
    def deep(v, d=0):
        return d if not isinstance(v, (list, dict)) else max([deep(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)] or [d + 1])

    assert find(iss.metadata(), lambda m: any(ord(c) > 127 for c in json.dumps(m, ensure_ascii=False)))
    assert deep(find(iss.metadata(), lambda m: deep(m) >= 3)) >= 3


# --------------------------------------------------------------------------
# entries, whole files, bytes
# --------------------------------------------------------------------------

@FAST
@given(iss.entries(version=1))
def test_entries_are_add_arguments(entry: iss.EntryArgs) -> None:
    f = IIDFile()
    e = f.add(*entry)
    assert e.seg.bbox == entry.bbox and np.array_equal(e.seg.mask(), entry.mask)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from([0, 1]).flatmap(lambda v: st.tuples(st.just(v), iss.iid_files(version=v, max_entries=4))))
def test_iid_files_round_trip_through_save(case) -> None:
    version, f = case
    want = [(e.iid.address, e.iid.domain, e.seg.bbox, e.seg.mask().copy()) for e in f]
    groups = {n: f.groups.keys(n).tolist() for n in f.groups}
    meta = f.meta.data
    data = iss.serialise(f)
    assert int.from_bytes(data[:4], "little") == version
    with IIDFile(data) as g:
        got = [(e.iid.address, e.iid.domain, e.seg.bbox, e.seg.mask()) for e in g.fetch(everything=True)]
        assert len(got) == len(want)
        for a, b in zip(want, got):
            assert a[:3] == b[:3] and np.array_equal(a[3], b[3])
        assert {n: g.groups.keys(n).tolist() for n in g.groups} == groups
        assert g.meta.data == meta


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from([0, 1]).flatmap(lambda v: st.tuples(st.just(v), iss.file_bytes(version=v, max_entries=4))))
def test_file_bytes_are_sound(case) -> None:
    version, data = case
    assert int.from_bytes(data[:4], "little") == version
    assert validate(data) == []


def test_file_bytes_with_a_fixed_codec() -> None:
    data = find(iss.file_bytes(version=1, codec="rle", max_entries=3, shape_classes=["full"]), lambda d: True)
    assert validate(data) == []


def test_importing_without_hypothesis_says_how_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "hypothesis" or name.startswith("hypothesis."):
                    raise ImportError("No module named 'hypothesis' (blocked)")
        sys.meta_path.insert(0, Block())
        try:
            import iidschema.strategies
        except ImportError as exc:
            print("IMPORTERROR:", exc)
        import iidschema  # the rest of the library does not need hypothesis
        print("LIBRARY OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "IMPORTERROR:" in out and "pip install iidschema[strategies]" in out
    assert "LIBRARY OK" in out


# --------------------------------------------------------------------------
# check_codec
# --------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["packbits", "rle", "zstd"])
def test_check_codec_passes_the_builtin_codecs(codec: str) -> None:
    iss.check_codec(codec, max_examples=60)


class _PackBits:
    """A correct codec to derive broken ones from."""

    id, name = 40000, "test-packbits"

    def encode(self, mask: np.ndarray) -> bytes:
        return np.packbits(np.asarray(mask, bool).ravel()).tobytes()

    def decode(self, buf, shape):
        h, w = shape
        if len(bytes(buf)) != (h * w + 7) // 8:
            raise IIDCodecError("wrong payload size")
        return np.unpackbits(np.frombuffer(bytes(buf), np.uint8), count=h * w).astype(bool).reshape(h, w)


class _BrokenOnNinePixels(_PackBits):
    """Inverts every pixel of masks of 9 pixels or more."""

    name = "broken-nine"

    def decode(self, buf, shape):
        out = super().decode(buf, shape)
        return ~out if out.size >= 9 else out


class _WrongException(_PackBits):
    name = "wrong-exception"

    def decode(self, buf, shape):
        h, w = shape
        if len(bytes(buf)) != (h * w + 7) // 8:
            raise ValueError("a plain ValueError instead of IIDCodecError")
        return super().decode(buf, shape)


def test_check_codec_passes_a_correct_third_party_codec() -> None:
    iss.check_codec(_PackBits(), max_examples=60)


def test_check_codec_catches_a_broken_codec_with_a_minimal_example() -> None:
    with pytest.raises(AssertionError) as info:
        iss.check_codec(_BrokenOnNinePixels(), max_examples=200)
    msg = str(info.value)
    assert "codec 'broken-nine' round trip fails" in msg
    assert "smallest failing example" in msg
    assert "decode(encode(mask)) != mask" in msg
    # shrunk to the smallest failing mask: exactly 9 pixels, none set
    m = re.search(r"(\d+)x(\d+) mask, (\d+) pixels set", msg)
    assert m, msg
    h, w, n = map(int, m.groups())
    assert h * w == 9 and n == 0, msg
    assert msg.count("\n    ") >= 1  # the mask is drawn


def test_check_codec_requires_iidcodecerror_for_bad_payloads() -> None:
    with pytest.raises(AssertionError, match="must raise IIDCodecError"):
        iss.check_codec(_WrongException(), max_examples=50)


# --------------------------------------------------------------------------
# check_format
# --------------------------------------------------------------------------

def _json_writer(f: IIDFile, path: str, drop_domain: bool = False) -> None:
    entries = [
        {
            "address": e.iid.address.hex(),
            "domain": "" if drop_domain else e.iid.domain.hex(),
            "bbox": list(e.seg.bbox),
            "mask": e.seg.mask().astype(int).tolist(),
        }
        for e in f
    ]
    with open(path, "w") as fh:
        json.dump(entries, fh)


def _json_reader(path: str) -> IIDFile:
    f = IIDFile()
    with open(path) as fh:
        for item in json.load(fh):
            box = tuple(item["bbox"])
            mask = np.array(item["mask"], dtype=bool).reshape(box[2] - box[0], box[3] - box[1])
            f.add(bytes.fromhex(item["address"]), bytes.fromhex(item["domain"]), box, mask)
    return f


def test_check_format_passes_a_correct_format() -> None:
    iss.check_format(_json_reader, _json_writer, max_examples=30, suffix=".json")


@pytest.mark.parametrize("version", [0, 1, 2])
def test_check_format_passes_iidfile_itself(version: int) -> None:
    iss.check_format(iidschema.open, lambda f, p: f.save(p, version=version), max_examples=20, version=version,
                     groups=True, meta=True)


def test_check_format_catches_a_lossy_writer_with_a_minimal_example() -> None:
    with pytest.raises(AssertionError) as info:
        iss.check_format(_json_reader, lambda f, p: _json_writer(f, p, drop_domain=True), max_examples=100, suffix=".json")
    msg = str(info.value)
    assert "format round trip fails" in msg and "smallest failing example" in msg
    assert "read back as" in msg
    # shrunk to one entry
    assert re.search(r"file: 1 entries", msg), msg
