"""The convert, formats and render commands: batch conversion with a
progress bar and per-file failures, and a rendering a person can look at."""

from __future__ import annotations

import json

import numpy as np
import pytest

import iidschema
from iidschema.cli import main
from iidschema.demo import build_sample
from iidschema.formats import config as fconfig
from iidschema.formats import read
from iidschema.formats.render import colour, render

pytest.importorskip("PIL")
pytest.importorskip("pycocotools")
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, "")


@pytest.fixture
def inputs(tmp_path):
    a = tmp_path / "a.iid"
    build_sample().save(a)
    b = tmp_path / "b.iid"
    f = iidschema.IIDFile()
    f.add(b"x", b"d", (0, 0, 2, 2), np.ones((2, 2), bool))
    f.save(b)
    bad = tmp_path / "broken.iid"
    bad.write_bytes(b"not an iid file at all")
    return a, b, bad


def test_batch_to_coco_reports_failures_and_goes_on(inputs, tmp_path, capsys):
    a, b, bad = inputs
    out = tmp_path / "all.json"
    rc = main(["convert", str(a), str(bad), str(b), str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"FAILED {bad}" in err and "converted 2 of 3 input(s)" in err
    assert "converting to coco" in err  # the tqdm progress bar, on stderr
    back = read(out)
    assert [len(f) for f in back] == [len(build_sample()), 1]


def test_batch_to_single_image_format_writes_a_folder(inputs, tmp_path, capsys):
    a, b, _ = inputs
    out = tmp_path / "masks"
    assert main(["convert", "-q", str(a), str(b), str(out), "--to", "png-masks"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.masks", "b.masks"]
    assert len(read(out / "a.masks")) == len(build_sample())
    # a COCO input with several images, to one file per image
    coco = tmp_path / "d.json"
    assert main(["convert", "-q", str(a), str(b), str(coco)]) == 0
    per = tmp_path / "per"
    assert main(["convert", "-q", str(coco), str(per), "--to", "iid"]) == 0
    assert sorted(p.name for p in per.iterdir()) == ["d_0000.iid", "d_0001.iid"]
    # writer options from the command line, validated
    assert main(["convert", "-q", str(b), str(tmp_path / "b.png"), "-o", "compress_level=9", "-o", "bit_depth=16"]) == 0
    with Image.open(tmp_path / "b.png") as img:
        assert img.mode == "I;16"
    assert main(["convert", "-q", str(b), str(tmp_path / "c.png"), "-o", "level=9"]) == 2  # usage error
    assert "unknown option(s) 'level'; valid options: bit_depth, compress_level, overlap, sidecar" in capsys.readouterr().err
    assert main(["convert", "-q", str(a), str(tmp_path / "o.png")]) == 1  # the demo overlaps: refused, said why
    assert "overlap" in capsys.readouterr().err


def test_formats_command(capsys):
    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    assert "coco" in out and "builtin_formats" in out and "reader order of plugins" in out
    assert main(["formats", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"iid", "coco", "png-labels", "png-masks", "medmask", "medmask-archive"} <= {d["name"] for d in doc["formats"]}


def test_render_draws_each_segment_in_its_colour(tmp_path, capsys):
    f = build_sample()
    path = tmp_path / "demo.iid"
    f.save(path)
    out = tmp_path / "overlay.png"
    assert main(["render", str(path), "-o", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == (640, 480) and img.mode == "RGB"
        rgb = np.asarray(img)
    # inside the sky (entry 0, not under anything else) the fill is the sky's colour blended in
    sky = np.array(colour(0), float)
    px = rgb[100, 320].astype(float)
    assert np.abs(px - (np.array([24, 24, 28]) * 0.55 + sky * 0.45)).max() <= 2
    assert tuple(rgb[0, 320]) == colour(0)  # outline at the sky's edge
    assert tuple(rgb[250, 20]) == (24, 24, 28)  # background between sky and ground
    # only one group, over a photo
    photo = np.full((480, 640, 3), 200, np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert main(["render", str(path), "--image", str(tmp_path / "photo.png"), "-g", "trees", "-o", str(tmp_path / "t.png")]) == 0
    with Image.open(tmp_path / "t.png") as img:
        t = np.asarray(img)
    assert tuple(t[100, 320]) == (200, 200, 200)  # the sky is not in 'trees'
    trees = f.groups.keys("trees")
    key = int(trees[0])
    minr, minc, maxr, maxc = f[key].seg.bbox
    cy, cx = (minr + maxr) // 2, (minc + maxc) // 2
    assert tuple(t[cy, cx]) != (200, 200, 200)


def test_render_api_selects_keys():
    f = build_sample()
    rgb = render(f, keys=[0], outline=False, alpha=1.0)
    assert tuple(rgb[100, 320]) == colour(0) and tuple(rgb[400, 320]) == (24, 24, 28)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_batch_on_a_scheduler_writes_what_the_sequential_batch_writes(inputs, tmp_path, capsys, scheduler):
    a, b, bad = inputs
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert main(["convert", "-q", str(a), str(b), str(seq), "--to", "iid"]) == 0
    rc = main(["convert", "-q", str(a), str(bad), str(b), str(par), "--to", "iid", "--scheduler", scheduler, "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and f"FAILED {bad}" in err and "converted 2 of 3 input(s)" in err
    assert sorted(p.name for p in par.iterdir()) == sorted(p.name for p in seq.iterdir()) == ["a.iid", "b.iid"]
    for name in ("a.iid", "b.iid"):
        assert (par / name).read_bytes() == (seq / name).read_bytes()


def test_batch_on_a_scheduler_refuses_inputs_that_would_collide(tmp_path, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        f = iidschema.IIDFile()
        f.add(b"x", b"d", (0, 0, 1, 1), np.ones((1, 1), bool))
        f.save(tmp_path / d / "same.iid")
    rc = main(["convert", "-q", str(tmp_path / "x" / "same.iid"), str(tmp_path / "y" / "same.iid"), str(tmp_path / "out"),
               "--to", "iid", "--scheduler", "threads"])
    assert rc == 2 and "same" in capsys.readouterr().err
