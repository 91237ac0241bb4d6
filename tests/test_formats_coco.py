"""COCO export/import proven with pycocotools: COCO() loads the file,
mask.decode reproduces every mask, COCOeval of the file against itself gives
AP = 1.0; RLEs built from crops equal pycocotools' own; giant canvases are
refused before pycocotools; foreign datasets (polygons, RLEs) import."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iidschema
from iidschema.demo import build_sample
from iidschema.errors import IIDFormatError, IIDLimitError
from iidschema.formats import IIDNoReaderError, read, write
from iidschema.formats import config as fconfig
from iidschema.formats.coco import MAX_COCO_PIXELS, rle_counts, rle_from_crop

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, "")


def second_image() -> iidschema.IIDFile:
    f = iidschema.IIDFile()
    yy, xx = np.ogrid[:30, :40]
    f.add(b"ring", b"shapes", (5, 7, 35, 47), ((yy - 15) ** 2 + (xx - 20) ** 2 < 200) & ((yy - 15) ** 2 + (xx - 20) ** 2 > 50), group="round")
    f.add(b"bar", "d\u00e9j\u00e0".encode(), (0, 0, 3, 60), np.ones((3, 60), bool))
    f.add(b"\xff\x00", b"shapes", (40, 50, 44, 53), np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], bool))
    f.meta.data = {"image": {"height": 50, "width": 64, "file_name": "second.jpg"}, "note": "hand made"}
    return f


@pytest.fixture
def dataset(tmp_path):
    files = [build_sample(), second_image()]
    path = tmp_path / "d.json"
    write(files, path)
    return files, path


def full_mask(entry, h, w):
    out = np.zeros((h, w), bool)
    minr, minc, maxr, maxc = entry.seg.bbox
    out[minr:maxr, minc:maxc] = entry.seg.mask()
    return out


def test_pycocotools_loads_and_decodes_every_mask(dataset):
    files, path = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2]
    for image_id, f in enumerate(files, 1):
        img = coco.loadImgs(image_id)[0]
        h, w = img["height"], img["width"]
        assert (h, w) == (f.meta.data["image"]["height"], f.meta.data["image"]["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(f)
        for ann, entry in zip(anns, f):
            seg = ann["segmentation"]
            assert seg["size"] == [h, w] and isinstance(seg["counts"], str)
            decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert decoded.shape == (h, w)
            assert np.array_equal(decoded.astype(bool), full_mask(entry, h, w))
            assert np.array_equal(coco.annToMask(ann).astype(bool), full_mask(entry, h, w))
            minr, minc, maxr, maxc = entry.seg.bbox
            assert ann["bbox"] == [minc, minr, maxc - minc, maxr - minr]
            assert ann["area"] == int(entry.seg.mask().sum()) == int(mask_utils.area(coco.annToRLE(ann)))
            assert ann["iscrowd"] == 0
            assert bytes.fromhex(ann["iid"]["address"]["hex"]) == entry.iid.address


def test_cocoeval_against_itself_gives_ap_1(dataset):
    _, path = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        results = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 1.0}
            for a in gt.dataset["annotations"]
        ]
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP @ IoU .50:.95, all areas
    assert ev.stats[1] == pytest.approx(1.0)  # AP @ IoU .50


def test_import_is_lossless(dataset):
    files, path = dataset
    back = read(path)
    assert len(back) == 2
    for f, g in zip(files, back):
        assert [(e.iid.address, e.iid.domain, e.seg.bbox) for e in g] == [(e.iid.address, e.iid.domain, e.seg.bbox) for e in f]
        assert all(np.array_equal(a.seg.mask(), b.seg.mask()) for a, b in zip(f, g))
        assert {n: g.groups.keys(n).tolist() for n in g.groups} == {n: f.groups.keys(n).tolist() for n in f.groups}
        assert g.meta.data == f.meta.data


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rle_from_crop_equals_pycocotools_encode(data):
    h = data.draw(st.integers(1, 20))
    w = data.draw(st.integers(1, 20))
    mh = data.draw(st.integers(0, h))
    mw = data.draw(st.integers(0, w))
    r0 = data.draw(st.integers(0, h - mh))
    c0 = data.draw(st.integers(0, w - mw))
    bits = data.draw(st.lists(st.booleans(), min_size=mh * mw, max_size=mh * mw))
    crop = np.array(bits, bool).reshape(mh, mw)
    full = np.zeros((h, w), np.uint8)
    full[r0 : r0 + mh, c0 : c0 + mw] = crop
    want = mask_utils.encode(np.asfortranarray(full))
    got = rle_from_crop(crop, (r0, c0), (h, w))
    assert got["counts"].encode() == want["counts"]
    assert sum(rle_counts(crop, (r0, c0), (h, w))) == h * w


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_many_crops_at_once_equal_pycocotools_encode(data):
    # Crops of any size on one image (empty, full-height, touching the
    # image's last pixel, ...), encoded together in small chunks.
    with pytest.MonkeyPatch.context() as mp:
        _many_crops_at_once(data, mp)


def _many_crops_at_once(data, monkeypatch):
    from iidschema.formats import coco

    monkeypatch.setattr(coco, "_RLE_CHUNK", data.draw(st.sampled_from([1, 7, 64, 1 << 22])))
    h = data.draw(st.integers(1, 12))
    w = data.draw(st.integers(1, 12))
    crops, origins, want = [], [], []
    for _ in range(data.draw(st.integers(0, 8))):
        mh = data.draw(st.integers(0, h))
        mw = data.draw(st.integers(0, w))
        r0 = data.draw(st.integers(0, h - mh))
        c0 = data.draw(st.integers(0, w - mw))
        fill = data.draw(st.sampled_from(["random", "ones"]))
        if fill == "ones":
            crop = np.ones((mh, mw), bool)
        else:
            crop = np.array(data.draw(st.lists(st.booleans(), min_size=mh * mw, max_size=mh * mw)), bool).reshape(mh, mw)
        full = np.zeros((h, w), np.uint8)
        full[r0 : r0 + mh, c0 : c0 + mw] = crop
        crops.append(crop)
        origins.append((r0, c0))
        want.append(mask_utils.encode(np.asfortranarray(full))["counts"])
    got = coco.rle_from_crops(crops, np.array(origins, dtype=np.int64).reshape(-1, 2), (h, w))
    assert [g["counts"].encode() for g in got] == want
    assert all(sum(c) == h * w for c in coco.rle_counts_many(crops, np.array(origins, dtype=np.int64).reshape(-1, 2), (h, w)))


def test_a_crop_off_the_image_is_refused():
    from iidschema.formats import coco

    with pytest.raises(ValueError, match="does not fit"):
        coco.rle_counts_many([np.ones((2, 2), bool)], np.array([[3, 0]]), (4, 4))


def _image_mask(data, rng, h: int, w: int) -> np.ndarray:
    """A uint8 mask on an h x w image: random pixels, a box, everything,
    nothing, or whole columns (runs going on from one column into the next)."""
    full = np.zeros((h, w), np.uint8)
    kind = data.draw(st.sampled_from(["random", "blob", "full", "empty", "columns"]))
    if kind == "random":
        full[:] = rng.random((h, w)) < rng.random()
    elif kind == "blob":
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        full[r0 : r0 + rng.integers(1, h + 1), c0 : c0 + rng.integers(1, w + 1)] = 1
    elif kind == "full":
        full[:] = 1
    elif kind == "columns":
        full[:, rng.integers(0, w) : rng.integers(0, w) + 3] = 1
    return full


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_counts_and_crops_read_without_the_full_image_equal_pycocotools(data):
    # Compressed strings made by pycocotools read back to their counts (the
    # deltas, signs and long counts of maskApi.c), and crops equal the
    # full-image decode: runs spanning columns, full-height masks, empty ones.
    from iidschema.formats import coco

    h = data.draw(st.integers(1, 40))
    w = data.draw(st.integers(1, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    full = _image_mask(data, rng, h, w)
    rle = mask_utils.encode(np.asfortranarray(full))
    counts = coco.counts_from_string(rle["counts"])
    assert counts.sum() == h * w
    assert mask_utils.frPyObjects({"counts": counts.tolist(), "size": [h, w]}, h, w)["counts"] == rle["counts"]
    bbox, crop = coco._crop_of_counts(counts, h, w, None, "t")
    if full.any():
        rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        assert bbox == (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    else:
        assert bbox == (0, 0, 0, 0)
    assert np.array_equal(crop, full[bbox[0] : bbox[2], bbox[1] : bbox[3]].astype(bool))
    # Any bbox holding every pixel gives that crop; one missing a pixel is refused.
    _, whole = coco._crop_of_counts(counts, h, w, (0, 0, h, w), "t")
    assert np.array_equal(whole, full.astype(bool))
    if full.any():
        with pytest.raises(IIDFormatError, match="outside its iid bbox"):
            coco._crop_of_counts(counts, h, w, (bbox[0], bbox[1], bbox[2] - 1, bbox[3]), "t")  # its last row is cut


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_malformed_compressed_counts_are_format_errors(raw):
    from iidschema.formats import coco

    try:
        counts = coco.counts_from_string(raw)
    except IIDFormatError:
        return
    assert counts.dtype == np.int64


def test_import_reads_large_images_without_full_image_arrays(tmp_path, monkeypatch):
    # A 20 000 x 20 000 image (400 Mpx): pycocotools' decode would make a
    # 400 MB array per annotation; the reader never calls it.
    from pycocotools import mask as mu

    monkeypatch.setattr(mu, "decode", lambda *a, **k: pytest.fail("decoded a full image"))
    f = iidschema.IIDFile()
    f.meta.data = {"image": {"height": 20_000, "width": 20_000}}
    f.add(b"a", b"d", (19_990, 19_990, 20_000, 20_000), np.eye(10, dtype=bool))
    f.add(b"b", b"d", (0, 5, 3, 9), np.ones((3, 4), bool))
    write(f, tmp_path / "big.json")
    g = read(tmp_path / "big.json")[0]
    assert [(e.seg.bbox, e.seg.mask().tolist()) for e in g] == [(e.seg.bbox, e.seg.mask().tolist()) for e in f]
    doc = json.loads((tmp_path / "big.json").read_text())
    for ann in doc["annotations"]:
        del ann["iid"]
    (tmp_path / "foreign.json").write_text(json.dumps(doc))
    h = read(tmp_path / "foreign.json")[0]
    assert [(e.seg.bbox, e.seg.mask().tolist()) for e in h] == [(e.seg.bbox, e.seg.mask().tolist()) for e in f]


@settings(max_examples=100, deadline=None)  # (3 000, several seeds, while writing it)
@given(st.data())
def test_annotations_read_together_equal_one_by_one(data):
    # The reader's batch path (every segmentation a compressed RLE string)
    # gives the bboxes and masks of the one-annotation path, with given
    # (iid) bboxes and with tight ones; and declines what that path refuses.
    from iidschema.formats import coco

    h = data.draw(st.integers(1, 16))
    w = data.draw(st.integers(1, 16))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    segs, fulls = [], []
    for _ in range(data.draw(st.integers(1, 7))):
        full = _image_mask(data, rng, h, w)
        fulls.append(full.astype(bool))
        segs.append({"size": [h, w], "counts": mask_utils.encode(np.asfortranarray(full))["counts"].decode()})
    one = [coco._crop_of_counts(coco._segmentation_counts(s, h, w, "t"), h, w, None, "t") for s in segs]
    got = coco._crops_of_strings(segs, h, w, None)
    assert got is not None
    assert got[0] == [b for b, _ in one]
    assert all(np.array_equal(a, m) for a, (_, m) in zip(got[1], one))
    whole = coco._crops_of_strings(segs, h, w, [(0, 0, h, w)] * len(segs))
    assert all(np.array_equal(m, full) for m, full in zip(whole[1], fulls))
    # What the one-by-one path refuses, the batch declines (and leaves to it).
    if any(f.any() for f in fulls):
        i = next(i for i, f in enumerate(fulls) if f.any())
        boxes = [(0, 0, h, w)] * len(segs)
        boxes[i] = (0, 0, 0, 0)
        assert coco._crops_of_strings(segs, h, w, boxes) is None
    bad = [dict(s) for s in segs]
    bad[-1]["counts"] = bad[-1]["counts"] + "1"  # one count more (at least 1): the sum is off
    assert coco._crops_of_strings(bad, h, w, None) is None


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.sampled_from(["counts", "size", "x"]), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)  # (run with 6 000 several times while writing it)
@given(
    h=st.integers(0, 9),
    w=st.integers(0, 9),
    seg=st.one_of(
        _JUNK,
        st.fixed_dictionaries({"size": st.just([4, 5]) | _JUNK, "counts": st.text(alphabet=st.characters(min_codepoint=30, max_codepoint=130), max_size=20)}),
        st.fixed_dictionaries({"size": st.just([4, 5]), "counts": st.lists(st.integers(-3, 25), max_size=8)}),
        st.lists(st.lists(st.floats(-10, 20, allow_nan=False) | st.integers(-10, 20), min_size=0, max_size=10), max_size=3),
    ),
    ours=st.booleans(),
    bbox=_JUNK | st.lists(st.integers(0, 10), min_size=4, max_size=4),
    address=_JUNK | st.just({"hex": "61"}),
    groups=_JUNK | st.just({}),
    category=_JUNK | st.just("c"),
)
def test_hostile_segmentations_are_format_errors(tmp_path_factory, h, w, seg, ours, bbox, address, groups, category):
    # Whatever an annotation holds, reading gives files or an IIDError that
    # names the annotation: never a numpy, pycocotools or Python error.
    from iidschema.errors import IIDError
    from iidschema.formats.coco import read_coco

    ann = {"id": 7, "image_id": 1, "category_id": 1, "segmentation": seg}
    img = {"id": 1, "height": h, "width": w}
    if ours:
        ann["iid"] = {"key": 0, "domain": {"hex": ""}, "address": address, "bbox": bbox}
        img["iid"] = {"groups": groups, "meta": {}}
    path = tmp_path_factory.mktemp("hostile") / "c.json"
    path.write_text(json.dumps({"images": [img], "annotations": [ann], "categories": [{"id": 1, "name": category}]}))
    try:
        files = read_coco(str(path))
    except IIDError as exc:
        assert "annotation" in str(exc) or "COCO" in str(exc) or "image" in str(exc), exc
        return
    (f,) = files
    for e in f:
        assert e.seg.mask().shape == (e.seg.bbox[2] - e.seg.bbox[0], e.seg.bbox[3] - e.seg.bbox[1])


def test_whole_slide_canvas_is_refused_before_pycocotools(tmp_path):
    f = iidschema.IIDFile()
    f.add(b"cell", b"wsi", (100, 100, 102, 102), np.ones((2, 2), bool))
    f.meta.data = {"image": {"height": 80_000, "width": 60_000}}  # 4.8 gigapixels
    with pytest.raises(IIDLimitError, match="uint32") as info:
        write(f, tmp_path / "wsi.json")
    assert "4,800,000,000" in str(info.value) and "png-masks" in str(info.value)
    assert not (tmp_path / "wsi.json").exists()
    f.meta.data = {"image": {"height": 65_535, "width": 65_537}}  # exactly 2**32 - 1 pixels: allowed
    assert 65_535 * 65_537 == MAX_COCO_PIXELS
    write(f, tmp_path / "edge.json")
    ann = json.loads((tmp_path / "edge.json").read_text())["annotations"][0]
    assert int(mask_utils.area({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})) == 4


def test_category_mappings(tmp_path):
    f = second_image()

    def cats(**kw):
        write(f, tmp_path / "c.json", **kw)
        d = json.loads((tmp_path / "c.json").read_text())
        names = {c["id"]: c["name"] for c in d["categories"]}
        return [names[a["category_id"]] for a in d["annotations"]], d["categories"]

    assert cats()[0] == ["shapes", "d\u00e9j\u00e0", "shapes"]
    assert cats(categories="group")[0] == ["round", "(no group)", "(no group)"]
    assert cats(categories="single")[0] == ["object"] * 3
    got, records = cats(categories={b"shapes": (7, "shape"), "d\u00e9j\u00e0": "text"})
    assert got == ["shape", "text", "shape"] and {(c["id"], c["name"]) for c in records} == {(7, "shape"), (1, "text")}
    assert cats(categories=lambda e: "big" if e.seg.area > 50 else "small")[0] == ["big", "big", "small"]
    with pytest.raises(IIDLimitError, match="no entry for domain"):
        cats(categories={b"shapes": "s"})
    with pytest.raises(IIDLimitError, match="category id 3 given to both"):
        cats(categories=lambda e: (3, e.iid.domain.hex()))


def test_foreign_dataset_polygons_and_rles(tmp_path):
    h, w = 20, 30
    crowd = np.zeros((h, w), np.uint8)
    crowd[2:5, 3:9] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    # uncompressed counts of the same mask
    flat = crowd.ravel(order="F")
    change = np.flatnonzero(np.diff(np.concatenate(([0], flat, [0])))) if flat.any() else []
    counts = np.diff(np.concatenate(([0], change, [h * w]))).tolist()
    poly = [[10.0, 10.0, 20.0, 10.0, 20.0, 16.0, 10.0, 16.0]]
    doc = {
        "images": [{"id": 9, "file_name": "p.jpg", "height": h, "width": w}, {"id": 10, "file_name": "none.jpg", "height": 5, "width": 5}],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "crowd"}],
        "annotations": [
            {"id": 100, "image_id": 9, "category_id": 1, "segmentation": poly, "area": 60, "bbox": [10, 10, 10, 6], "iscrowd": 0, "score": 0.5},
            {"id": 101, "image_id": 9, "category_id": 2, "segmentation": {"size": [h, w], "counts": counts}, "area": 18, "bbox": [3, 2, 6, 3], "iscrowd": 1},
            {"id": 102, "image_id": 9, "category_id": 2, "segmentation": {"size": [h, w], "counts": crowd_rle["counts"].decode()}, "area": 18, "bbox": [3, 2, 6, 3], "iscrowd": 0},
        ],
    }
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(doc))
    f, empty = read(path)
    assert len(empty) == 0 and empty.meta.data["image"]["file_name"] == "none.jpg"
    assert [(e.iid.address, e.iid.domain) for e in f] == [(b"100", b"box"), (b"101", b"crowd"), (b"102", b"crowd")]
    want_poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w))).astype(bool)
    assert np.array_equal(full_mask(f[0], h, w), want_poly)
    assert np.array_equal(full_mask(f[1], h, w), crowd.astype(bool))
    assert np.array_equal(full_mask(f[2], h, w), crowd.astype(bool))
    assert f[1].seg.bbox == (2, 3, 5, 9)  # tight
    assert f.groups.keys("iscrowd").tolist() == [1] and f.groups.keys("crowd").tolist() == [1, 2]
    assert f.meta.data["coco"]["annotations"][0]["score"] == 0.5


def test_json_that_is_not_coco(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(IIDNoReaderError, match="plugin 'builtin_formats' \\(format 'coco'\\): failed: .*no 'images' list"):
        read(p)
    p.write_text("[1, 2]")
    with pytest.raises(IIDNoReaderError, match="declined: not a JSON object"):
        read(p)
