"""The format registry: declarations, reader order and its configuration
file / environment variable, the INFO mapping log, writer choice, options,
errors, lazy declarations, and a third-party plugin installed from
examples/iidschema-example-plugin."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import iidschema
from iidschema.errors import IIDPluginError
from iidschema.formats import FormatSpec, IIDNoReaderError, IIDOptionError, Option, formats, get_registry, read, write
from iidschema.formats import config as fconfig
from iidschema.plugins import get_plugin_manager, hookimpl, register_plugin, reset_plugin_manager, unregister_plugin
from iidschema.plugins.report import format_plugins_report, plugins_report

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "iidschema-example-plugin"


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    """Tests never see the developer's own configuration file."""
    monkeypatch.setenv(fconfig.ENV_VAR, "")


def sample() -> iidschema.IIDFile:
    f = iidschema.IIDFile()
    f.add(b"tree", b"wordnet", (1, 2, 4, 6), np.eye(3, 4, dtype=bool), group="g")
    f.add(b"cat", b"", (0, 0, 2, 2), np.ones((2, 2), bool))
    f.meta.data = {"image": {"height": 8, "width": 8}}
    return f


# -- two toy plugins claiming the same extension ------------------------------------

CALLS: list[str] = []


def _toy_reader(tag):
    def read_toy(path):
        CALLS.append(tag)
        f = iidschema.IIDFile()
        f.meta.data = {"read_by": tag}
        return f

    return read_toy


def _toy_writer(tag):
    def write_toy(f, path, **opts):
        Path(path).write_text(f"{tag} {sorted(opts.items())}")

    return write_toy


class ToyA:
    @hookimpl
    def iidschema_formats(self):
        return [FormatSpec("toy", (".toy",), "toy A", reader=_toy_reader("alpha"), writer=_toy_writer("alpha"),
                           write_options=(Option("level", 1, "a level", int, check=lambda v: None if 0 <= v <= 3 else "must be 0..3"),))]


class ToyB:
    @hookimpl
    def iidschema_formats(self):
        return [FormatSpec("toy", (".toy",), "toy B", reader=_toy_reader("beta"), writer=_toy_writer("beta"))]


class Declining:
    @hookimpl
    def iidschema_formats(self):
        return [FormatSpec("toy", (".toy",), "declines", reader=_toy_reader("never"), probe=lambda p: "not my kind of toy")]


@pytest.fixture
def toys():
    names = [register_plugin(ToyB(), name="zz_toy_beta"), register_plugin(ToyA(), name="aa_toy_alpha")]
    CALLS.clear()
    yield names
    for n in names:
        unregister_plugin(n)


@pytest.fixture
def toy_file(tmp_path):
    p = tmp_path / "x.toy"
    p.write_text("toy")
    return p


def test_builtin_formats_declared():
    names = {d["name"]: d for d in formats()}
    assert {"iid", "coco", "png-labels", "png-masks", "medmask", "medmask-archive"} <= set(names)
    assert names["coco"]["extensions"] == [".json"] and "multi" in names["coco"]["capabilities"]
    assert "lazy" in names["iid"]["capabilities"]
    assert names["png-masks"]["capabilities"] == ["read", "write", "directory"]


def test_default_order_is_lexicographic(toys, toy_file):
    assert read(toy_file).meta.data == {"read_by": "alpha"}
    assert get_registry().plugin_order.index("aa_toy_alpha") < get_registry().plugin_order.index("zz_toy_beta")


def test_config_file_changes_order(toys, toy_file, tmp_path, monkeypatch, caplog):
    cfg = tmp_path / "config.yml"
    cfg.write_text("plugin_order:\n  - zz_toy_beta\n")
    monkeypatch.setenv(fconfig.ENV_VAR, str(cfg))
    with caplog.at_level(logging.INFO, logger="iidschema.plugins"):
        assert read(toy_file).meta.data == {"read_by": "beta"}
    text = caplog.text
    assert "reader order of plugins: zz_toy_beta, aa_toy_alpha" in text
    assert "format 'toy' (.toy): read by zz_toy_beta > aa_toy_alpha" in text
    assert str(cfg) in text
    # the writer is not affected by the order: built-ins first, then by name
    write(sample(), tmp_path / "o.toy")
    assert (tmp_path / "o.toy").read_text().startswith("alpha")


def test_default_location_and_env_override(toys, toy_file, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "iidschema").mkdir(parents=True)
    (xdg / "iidschema" / "config.yml").write_text("plugin_order: [zz_toy_beta]\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv(fconfig.ENV_VAR)
    assert fconfig.config_path() == (str(xdg / "iidschema" / "config.yml"), "default")
    assert read(toy_file).meta.data == {"read_by": "beta"}
    # the variable replaces the default file, which is then ignored entirely
    other = tmp_path / "other.yml"
    other.write_text("plugin_order: [aa_toy_alpha]\n")
    monkeypatch.setenv(fconfig.ENV_VAR, str(other))
    assert read(toy_file).meta.data == {"read_by": "alpha"}
    monkeypatch.setenv(fconfig.ENV_VAR, "")  # empty: no configuration at all
    assert get_registry().config.path is None
    assert read(toy_file).meta.data == {"read_by": "alpha"}
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv(fconfig.ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fconfig.default_config_path() == tmp_path / "home" / ".config" / "iidschema" / "config.yml"


def test_libraries_select_plugins(toys, toy_file, tmp_path, monkeypatch, caplog):
    cfg = tmp_path / "c.yml"
    cfg.write_text("libraries: ['*beta*', builtin]\n")
    monkeypatch.setenv(fconfig.ENV_VAR, str(cfg))
    with caplog.at_level(logging.INFO, logger="iidschema.plugins"):
        reg = get_registry()
    assert "aa_toy_alpha" in reg.excluded and "aa_toy_alpha" not in reg.plugin_order
    assert "not selected by 'libraries'" in caplog.text
    assert read(toy_file).meta.data == {"read_by": "beta"}
    assert "coco" in reg.format_names()


@pytest.mark.parametrize(
    "text, words",
    [
        ("plugin_order: 3\n", "must be a list"),
        ("bogus: [a]\n", "unknown key(s) 'bogus'; valid keys: libraries, plugin_order"),
        ("plugin_order: [a\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, monkeypatch, text, words):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(text)
    monkeypatch.setenv(fconfig.ENV_VAR, str(cfg))
    with pytest.raises(IIDPluginError) as info:
        get_registry()
    assert words in str(info.value) and str(cfg) in str(info.value)


def test_missing_config_named_by_env_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, str(tmp_path / "nope.yml"))
    with pytest.raises(IIDPluginError, match="does not exist"):
        get_registry()


def _broken(path):
    raise ValueError("corrupt toy")


class Broken:
    @hookimpl
    def iidschema_formats(self):
        return [FormatSpec("toy", (".toy",), "broken", reader=_broken)]


def test_no_reader_lists_every_plugin_tried(toy_file):
    names = [register_plugin(Declining(), name="mm_declining"), register_plugin(Broken(), name="ab_broken")]
    try:
        with pytest.raises(IIDNoReaderError) as info:
            read(toy_file)
        with pytest.raises(IIDOptionError, match=r"reading toy: unknown option\(s\) 'nonsense'; valid options: none"):
            read(toy_file, format="toy", nonsense=1)
    finally:
        for n in names:
            unregister_plugin(n)
    err = info.value
    msg = str(err)
    assert "plugin 'ab_broken' (format 'toy'): failed: ValueError: corrupt toy" in msg
    assert "plugin 'mm_declining' (format 'toy'): declined: not my kind of toy" in msg
    assert [t[0] for t in err.tried] == ["ab_broken", "mm_declining"]


def test_unknown_extension_and_format(tmp_path):
    p = tmp_path / "x.unknownext"
    p.write_text("?")
    with pytest.raises(IIDNoReaderError, match="no reader claims .*known extensions: .*\\.json \\(coco\\)"):
        read(p)
    with pytest.raises(IIDPluginError, match="unknown format 'nope'; known formats: coco"):
        write(sample(), tmp_path / "o.x", format="nope")
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "missing.iid")


def test_writer_options_are_validated(toys, tmp_path):
    with pytest.raises(IIDOptionError, match=r"unknown option\(s\) 'lvl'; valid options: level"):
        write(sample(), tmp_path / "o.toy", lvl=2)
    with pytest.raises(IIDOptionError, match="bad value 7 for option 'level': must be 0..3"):
        write(sample(), tmp_path / "o.toy", level=7)
    with pytest.raises(IIDOptionError, match="must be int, got float"):
        write(sample(), tmp_path / "o.toy", level=1.5)
    write(sample(), tmp_path / "o.toy", level="2")  # text from the command line is converted
    assert (tmp_path / "o.toy").read_text() == "alpha [('level', 2)]"
    with pytest.raises(IIDOptionError, match="compress_level.*0 \\(none\\) to 9"):
        write(sample(), tmp_path / "o.png", compress_level=11)
    with pytest.raises(IIDOptionError, match="must be one of 'error', 'first', 'last'"):
        write(sample(), tmp_path / "o.png", overlap="sometimes")
    with pytest.raises(IIDOptionError, match="medmask 0.1.3 knows codec"):
        write(sample(), tmp_path / "o.msk", codec="lz4")
    with pytest.raises(IIDOptionError, match="unknown mask codec"):
        write(sample(), tmp_path / "o.iid", codec="nope")


def test_broken_declaration_is_recorded_not_fatal():
    class Junk:
        @hookimpl
        def iidschema_formats(self):
            return ["not a spec"]

    name = register_plugin(Junk(), name="junk_formats")
    try:
        assert "coco" in get_registry().format_names()
        failures = [f for f in get_plugin_manager().failures if f.name == "junk_formats"]
        assert failures and failures[0].stage == "hook iidschema_formats" and "not a FormatSpec" in failures[0].error
        assert any(p["name"] == "(format registry)" or p["name"] == "junk_formats" for p in plugins_report()["failures"])
    finally:
        unregister_plugin(name)


def test_plugins_report_lists_formats():
    report = plugins_report()
    builtin = next(p for p in report["plugins"] if p["name"] == "builtin_formats")
    assert {f["name"] for f in builtin["formats"]} >= {"coco", "iid", "png-labels"}
    text = format_plugins_report(report)
    assert "coco (.json; read,write,multi) [builtin_formats]" in text


def test_declarations_import_nothing_heavy():
    code = (
        "import sys, iidschema.formats as f; f.formats(); "
        "from iidschema.plugins.report import plugins_report; plugins_report(); "
        "heavy = [m for m in ('pycocotools', 'PIL', 'medmask', 'spacetransformer') if m in sys.modules]; "
        "print(heavy); assert not heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, fconfig.ENV_VAR: ""})
    assert out.returncode == 0, out.stderr + out.stdout


def test_builtin_entry_point_or_fallback():
    src = get_plugin_manager().sources["builtin_formats"]
    assert src["kind"] in ("entry point", "fallback")
    assert src["value"] == "iidschema.formats.builtin"


# -- a third-party plugin, installed --------------------------------------------------


def _can_build_offline() -> bool:
    try:
        import setuptools

        if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= (70, 1):
            return True
        importlib.import_module("wheel")
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory):
    """Install examples/iidschema-example-plugin into a private folder put on
    sys.path (so the test environment sees its entry point, and nothing is
    left installed afterwards)."""
    root = tmp_path_factory.mktemp("example-plugin")
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input", "--disable-pip-version-check", "--target", str(target)]
    if _can_build_offline():
        cmd.append("--no-build-isolation")
    cmd.append(str(src))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail(f"installing the example plugin failed:\n{out.stdout}\n{out.stderr}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    reset_plugin_manager()
    yield target
    sys.path.remove(str(target))
    for mod in [m for m in sys.modules if m.startswith("iidschema_example_plugin")]:
        del sys.modules[mod]
    importlib.invalidate_caches()
    reset_plugin_manager()


def test_example_plugin_through_read_write(example_plugin, tmp_path):
    reset_plugin_manager()
    pm = get_plugin_manager()
    assert pm.sources["example_npz"]["kind"] == "entry point"
    assert pm.sources["example_npz"]["dist"] == "iidschema-example-plugin 0.1.0"
    decl = {(d["name"], d["plugin"]) for d in formats()}
    assert {("example-npz", "example_npz"), ("example-csv", "example_npz")} <= decl
    f = sample()
    write(f, tmp_path / "f.npz")
    g = read(tmp_path / "f.npz")
    assert [(e.iid.address, e.iid.domain, e.seg.bbox) for e in g] == [(e.iid.address, e.iid.domain, e.seg.bbox) for e in f]
    assert all(np.array_equal(a.seg.mask(), b.seg.mask()) for a, b in zip(f, g))
    assert g.meta.data == f.meta.data and g.groups.keys("g").tolist() == [0]
    write(f, tmp_path / "b.csv", delimiter=";")
    assert (tmp_path / "b.csv").read_text().splitlines()[0] == "key;domain;address;minr;minc;maxr;maxc;area"
    with pytest.raises(IIDOptionError, match="must be one character"):
        write(f, tmp_path / "b.csv", delimiter=";;")
    with pytest.raises(IIDPluginError, match="cannot be read by any installed plugin"):
        read(tmp_path / "b.csv", format="example-csv")
    # the CLI sees it too (in a subprocess, through PYTHONPATH)
    env = {**os.environ, "PYTHONPATH": str(example_plugin), fconfig.ENV_VAR: ""}
    out = subprocess.run([sys.executable, "-m", "iidschema", "formats"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "example-npz" in out.stdout and "example_npz" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "iidschema", "convert", "-q", str(tmp_path / "f.npz"), str(tmp_path / "f.json")],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert read(tmp_path / "f.json")[0].meta.data == f.meta.data


def test_builtin_formats_through_their_entry_point():
    """With the entry point ``builtin_formats = iidschema.formats.builtin``
    (pyproject.toml) the built-ins load like any plugin: no fallback."""
    import importlib.metadata as md

    from iidschema.plugins.manager import create_plugin_manager

    eps = [
        md.EntryPoint(name="builtin_codecs", value="iidschema.codecs.builtin", group="iidschema"),
        md.EntryPoint(name="builtin_formats", value="iidschema.formats.builtin", group="iidschema"),
    ]
    pm = create_plugin_manager(entry_points=eps)
    reg = get_registry(pm)
    assert pm.sources["builtin_formats"]["kind"] == "entry point"
    assert not any("built-in formats were registered directly" in n for n in pm.notes)
    assert reg.plugin_order == ["builtin_formats"] and "coco" in reg.format_names()
    get_registry()  # back to the project's manager


def test_package_is_callable_as_formats():
    """``iidschema.formats()`` lists formats; ``iidschema.formats`` stays the package."""
    import iidschema.formats as package

    assert package() == formats() and package.read is read and package.write is write
