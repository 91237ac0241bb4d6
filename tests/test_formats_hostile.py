"""Hostile JSON and damaged bytes in the files the format plugins read:
every reader either gives files or raises an
:class:`~iidschema.errors.IIDError`, never a ``TypeError``, ``KeyError``,
``MemoryError``, numpy, Pillow or medmask error (nor a crash in a C library).

A valid file is written in each format; then either one node of its JSON
(the sidecar of png-labels and medmask, ``index.json`` of png-masks, the
COCO document) is replaced by junk, or bytes of the binary file (PNG,
medmask) are changed or cut, as hypothesis chooses.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema.errors import IIDError
from iidschema.formats import config as fconfig
from iidschema.formats import write

pytest.importorskip("PIL")

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, "")


def _sample() -> iidschema.IIDFile:
    f = iidschema.IIDFile()
    f.add(b"liver", b"organs", (1, 1, 4, 5), np.ones((3, 4), bool), group="abdomen")
    f.add(b"spleen", b"", (5, 0, 7, 3), [[1, 1, 0], [0, 1, 1]], group=["abdomen", "x"])
    f.meta.data = {"image": {"height": 9, "width": 10}, "study": 3}
    return f


def _formats() -> list[tuple[str, str, str]]:
    """(name, file name, its JSON file relative to the written path's folder),
    for the formats whose libraries are installed."""
    import importlib.util

    out = [("png-labels", "a.png", "a.png.iid.json"), ("png-masks", "a.masks", "a.masks/index.json")]
    if importlib.util.find_spec("pycocotools"):
        out.append(("coco", "a.json", "a.json"))
    if importlib.util.find_spec("medmask"):
        out += [("medmask", "a.msk", "a.msk.iid.json"), ("medmask-archive", "a.mska", "a.mska.iid.json")]
    return out


FORMATS = _formats()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Each format's file, written once, and its JSON document."""
    root = tmp_path_factory.mktemp("originals")
    out = {}
    for name, filename, doc in FORMATS:
        folder = root / name
        folder.mkdir()
        write(_sample(), folder / filename, format=name)
        out[name] = (folder, filename, doc, json.loads((folder / doc).read_text()))
    return out


def _paths(node, prefix=()):
    """Every path into a JSON document (the root included)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replaced(doc, path, value):
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


def _read(name, path):
    from iidschema.formats import coco, medmask, png

    reader = {"png-labels": png.read_labels, "png-masks": png.read_masks, "coco": coco.read_coco,
              "medmask": medmask.read_msk, "medmask-archive": medmask.read_mska}[name]
    return reader(str(path))


@pytest.mark.parametrize("name", [n for n, _, _ in FORMATS])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))  # (3 000 each, several seeds, while writing it)
@given(data=st.data())
def test_hostile_json_is_a_format_error(originals, tmp_path_factory, name, data):
    folder, filename, docname, doc = originals[name]
    paths = list(_paths(doc))
    where = data.draw(st.sampled_from(paths))
    junk = data.draw(JUNK)
    work = tmp_path_factory.mktemp("hostile")
    shutil.copytree(folder, work, dirs_exist_ok=True)
    with open(os.path.join(work, docname), "w", encoding="utf-8") as fh:
        json.dump(_replaced(doc, where, junk), fh)
    try:
        result = _read(name, work / filename)
    except IIDError:
        return
    for f in result if isinstance(result, list) else [result]:
        for e in f:
            assert e.seg.mask().shape == (e.seg.bbox[2] - e.seg.bbox[0], e.seg.bbox[3] - e.seg.bbox[1])


BINARY = [(n, f) for n, f, _ in FORMATS if n in ("png-labels", "medmask", "medmask-archive")]
BINARY.append(("png-masks", "a.masks"))  # its first mask's PNG damaged


@pytest.mark.parametrize("name,filename", BINARY)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_bytes_are_format_errors(originals, tmp_path_factory, name, filename, data):
    # Bytes changed (mostly in the header and index, where lengths and sizes
    # live) or cut short: the third-party parser's errors, MemoryError from a
    # declared size included, come out as IIDFormatError.
    folder = originals[name][0]
    target = filename if name != "png-masks" else os.path.join(filename, sorted(os.listdir(folder / filename))[0])
    raw = bytearray((folder / target).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, min(len(raw), 256) - 1) | st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    work = tmp_path_factory.mktemp("damaged")
    if name == "png-masks":
        shutil.copytree(folder / filename, work / filename)
    (work / target).write_bytes(bytes(raw))  # (no sidecar: the bytes alone)
    try:
        f = _read(name, work / filename)
    except IIDError:
        return
    for e in f:
        assert e.seg.mask().shape == (e.seg.bbox[2] - e.seg.bbox[0], e.seg.bbox[3] - e.seg.bbox[1])
