"""PNG formats proven with Pillow: the label map's pixels, bit depths and
sidecar; overlap policies; the folder of 1-bit PNGs; import of plain label
maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

import iidschema
from iidschema.demo import build_sample
from iidschema.errors import IIDLimitError
from iidschema.formats import read, write
from iidschema.formats import config as fconfig

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, "")


def overlapping() -> iidschema.IIDFile:
    f = iidschema.IIDFile()
    f.add(b"a", b"d", (0, 0, 4, 4), np.ones((4, 4), bool), group="g")
    f.add(b"b", b"d", (2, 2, 6, 6), np.ones((4, 4), bool))
    f.meta.data = {"image": {"height": 8, "width": 8}}
    return f


def non_overlapping_demo() -> iidschema.IIDFile:
    """The demo without its overlapping entries (trunks/crowns/leaves over sky)."""
    src = build_sample()
    f = iidschema.IIDFile()
    taken = np.zeros((480, 640), bool)
    for e in src:
        minr, minc, maxr, maxc = e.seg.bbox
        m = e.seg.mask()
        if not (taken[minr:maxr, minc:maxc] & m).any():
            taken[minr:maxr, minc:maxc] |= m
            f.add(e.iid.address, e.iid.domain, e.seg.bbox, m)
    f.meta.data = src.meta.data
    return f


def test_label_map_pixels_read_by_pillow(tmp_path):
    f = non_overlapping_demo()
    path = tmp_path / "labels.png"
    write(f, path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (640, 480) and img.mode == "L"  # <= 255 labels: 8-bit
        arr = np.asarray(img)
    for e in f:
        minr, minc, maxr, maxc = e.seg.bbox
        crop = arr[minr:maxr, minc:maxc]
        assert np.array_equal(crop == e.key + 1, e.seg.mask())
    side = json.loads((tmp_path / "labels.png.iid.json").read_text())
    assert side["format"] == "iidschema-png-labels" and side["encoding"] == "gray8"
    assert [(x["label"], bytes.fromhex(x["address"]["hex"])) for x in side["entries"]] == [(e.key + 1, e.iid.address) for e in f]


@pytest.mark.parametrize("depth, mode", [(16, "I;16"), (24, "RGB")])
def test_16_and_24_bit_label_maps(tmp_path, depth, mode):
    f = iidschema.IIDFile()
    for i in range(300):  # more than 8 bits of labels
        f.add(str(i).encode(), b"", (i // 20, i % 20, i // 20 + 1, i % 20 + 1), [[1]])
    path = tmp_path / f"l{depth}.png"
    write(f, path, bit_depth=str(depth) if depth == 16 else depth)
    with Image.open(path) as img:
        assert img.mode == mode
        arr = np.asarray(img).astype(np.uint32)
    labels = arr if depth == 16 else (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    for i in range(300):
        assert labels[i // 20, i % 20] == i + 1
    g = read(path)
    assert [e.iid.address for e in g] == [str(i).encode() for i in range(300)]
    with pytest.raises(IIDLimitError, match="do not fit 8-bit labels"):
        write(f, tmp_path / "x.png", bit_depth=8)


def test_24_bit_labels_use_all_three_bytes(tmp_path):
    # Labels above 65535 have a red byte: (R, G, B) = bytes 2, 1, 0 of the label.
    n = 70_000
    f = iidschema.IIDFile()
    pos = np.arange(n)
    boxes = np.stack([pos // 300, pos % 300, pos // 300 + 1, pos % 300 + 1], axis=1)
    f.add_many([b"%d" % i for i in range(n)], b"", boxes, [np.ones((1, 1), bool)] * n)
    path = tmp_path / "l24.png"
    write(f, path, sidecar=False)
    with Image.open(path) as img:
        assert img.mode == "RGB"
        arr = np.asarray(img).astype(np.uint32)
    labels = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    assert np.array_equal(labels.reshape(-1)[:n], pos + 1)
    assert int(arr[..., 0].max()) == (n >> 16)
    g = read(path)  # no sidecar: entries from the label map
    assert len(g) == n
    cols = g.masks(iids=True)
    assert cols.addresses == [b"%d" % (i + 1) for i in range(n)]
    assert np.array_equal(cols.bboxes, boxes)


def test_label_maps_beyond_pillows_bomb_limit_read_within_ours(tmp_path, monkeypatch):
    # Pillow refuses images above its decompression-bomb limit (179 Mpx by
    # default), which label maps written here can exceed; the reader applies
    # iidschema's own limit instead, on the PNG's header, before decoding.
    from iidschema import masks as masks_module
    from iidschema.formats.png import read_labels

    f = iidschema.IIDFile()
    f.add(b"a", b"", (3, 4, 20, 30), np.ones((17, 26), bool))
    write(f, tmp_path / "l.png", sidecar=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20 x 30 = 600 pixels: a "bomb" to Pillow
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "l.png")
    g = read(tmp_path / "l.png")
    assert [(e.seg.bbox, e.seg.area) for e in g] == [((3, 4, 20, 30), 17 * 26)]
    assert Image.MAX_IMAGE_PIXELS == 100  # restored
    monkeypatch.setattr(masks_module, "MAX_MASK_PIXELS", 599)
    with pytest.raises(IIDLimitError, match="MAX_MASK_PIXELS"):
        read_labels(str(tmp_path / "l.png"))


def test_16_bit_is_the_auto_choice_above_255(tmp_path):
    f = iidschema.IIDFile()
    for i in range(256):
        f.add(b"x", b"", (0, i, 1, i + 1), [[1]])
    write(f, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "I;16"


def test_overlap_refused_unless_a_policy_is_chosen(tmp_path):
    f = overlapping()
    with pytest.raises(IIDLimitError, match=r"entries 0 .* and 1 .* overlap .*4 pixels.*overlap='first'") as info:
        write(f, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
    assert "png-masks" in str(info.value)
    for policy, owner in (("first", 1), ("last", 2)):
        write(f, tmp_path / f"{policy}.png", overlap=policy)
        with Image.open(tmp_path / f"{policy}.png") as img:
            arr = np.asarray(img)
        assert arr[3, 3] == owner and arr[0, 0] == 1 and arr[5, 5] == 2
    g = read(tmp_path / "first.png")
    assert g[1].seg.mask().sum() == 12  # lossy by choice: the shared pixels went to entry 0


def test_png_masks_folder_read_by_pillow(tmp_path):
    f = build_sample()  # overlapping entries are kept
    out = tmp_path / "demo.masks"
    write(f, out)
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "iidschema-png-masks" and len(index["entries"]) == len(f)
    for item, e in zip(index["entries"], f):
        with Image.open(out / item["file"]) as img:
            assert img.mode == "1"
            assert img.size == (e.seg.bbox[3] - e.seg.bbox[1], e.seg.bbox[2] - e.seg.bbox[0])
            assert np.array_equal(np.asarray(img), e.seg.mask())
        assert item["bbox"] == list(e.seg.bbox)
        assert item["groups"] == [n for n in f.groups if e.key in f.groups.keys(n)]
    # rewriting over the folder replaces it; a foreign folder is never overwritten
    write(f, out)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not written by iidschema"):
        write(f, foreign, format="png-masks")
    assert (foreign / "cat.jpg").exists()


def test_plain_label_png_imports_without_sidecar(tmp_path):
    arr = np.zeros((10, 12), np.uint16)
    arr[1:3, 2:5] = 7
    arr[6:9, 0:2] = 1000
    Image.fromarray(arr).save(tmp_path / "seg.png")
    f = read(tmp_path / "seg.png")
    assert [(e.iid.address, e.iid.domain, e.seg.bbox) for e in f] == [(b"7", b"", (1, 2, 3, 5)), (b"1000", b"", (6, 0, 9, 2))]
    assert f.meta.data["image"] == {"height": 10, "width": 12}
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(tmp_path / "rgba.png")
    with pytest.raises(Exception, match="RGBA image; a label map is mode"):
        read(tmp_path / "rgba.png")


def test_writing_without_sidecar_removes_a_stale_one(tmp_path):
    f = overlapping()
    write(f, tmp_path / "s.png", overlap="first")
    assert (tmp_path / "s.png.iid.json").exists()
    write(f, tmp_path / "s.png", overlap="first", sidecar=False)
    assert not (tmp_path / "s.png.iid.json").exists()
    assert [e.iid.address for e in read(tmp_path / "s.png")] == [b"1", b"2"]
