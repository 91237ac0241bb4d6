"""The plugin manager: third-party codecs, conflicts, broken plugins, lazy
loading, and the plugins report."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
import types

import numpy as np
import pytest

import iidschema.plugins.manager as manager
from iidschema.codecs import CodecSpec, available_codecs, encode_auto, get_codec, resolve_codec
from iidschema.codecs.base import MaskCodec, as_mask, check_shape
from iidschema.errors import IIDCodecError, IIDPluginError
from iidschema.plugins import (
    failed_plugins,
    get_plugin_manager,
    hookimpl,
    register_plugin,
    reset_plugin_manager,
    unregister_plugin,
)
from iidschema.plugins.report import format_plugins_report, plugins_report


class InvertedPackBits(MaskCodec):
    """Packbits of the complement (a toy third-party codec)."""

    id = 200
    name = "invpack"
    description = "packbits of the inverted mask"

    def encode(self, mask: np.ndarray) -> bytes:
        return np.packbits(~as_mask(mask).ravel()).tobytes()

    def decode(self, buffer, shape) -> np.ndarray:
        h, w = check_shape(shape)
        if len(buffer) != (h * w + 7) // 8:
            raise IIDCodecError("invpack: wrong size")
        bits = np.unpackbits(np.frombuffer(buffer, np.uint8), count=h * w).view(bool)
        return ~bits.reshape(h, w)


class SpecPlugin:
    """A plugin object declaring its codec lazily (a callable loader)."""

    loads = 0

    @hookimpl
    def iidschema_codecs(self):
        def load():
            SpecPlugin.loads += 1
            return InvertedPackBits()

        return [CodecSpec(200, "invpack", load, "packbits of the inverted mask")]


class ReadyPlugin:
    """A plugin object returning a ready codec object (wrapped in a spec)."""

    def __init__(self, codec):
        self.codec = codec

    @hookimpl
    def iidschema_codecs(self):
        return [self.codec]


def codec_plugin(codec_id: int, name: str, loader="iidschema.codecs.rle:RLECodec"):
    class Plugin:
        @hookimpl
        def iidschema_codecs(self):
            return [CodecSpec(codec_id, name, loader, "test")]

    return Plugin()


@pytest.fixture
def plugins():
    """Register plugins for one test; every one is unregistered afterwards."""
    names: list[str] = []

    def register(obj, name=None):
        registered = register_plugin(obj, name)
        names.append(registered)
        return registered

    yield register
    pm = get_plugin_manager()
    for name in names:
        if pm.get_plugin(name) is not None:
            unregister_plugin(name)


@pytest.fixture
def fresh_manager(monkeypatch):
    """Rediscover plugins (with a patched discovery) in a new singleton; the
    normal one is rebuilt afterwards."""
    reset_plugin_manager()
    yield monkeypatch
    monkeypatch.undo()
    reset_plugin_manager()


def real_entry_points():
    return list(importlib.metadata.entry_points(group="iidschema"))


# --- third-party codecs ---------------------------------------------------------------


def test_third_party_codec_round_trips_and_is_listed(plugins):
    SpecPlugin.loads = 0
    name = plugins(SpecPlugin(), "invpack-plugin")
    assert name == "invpack-plugin"
    assert SpecPlugin.loads == 0  # registering and listing load nothing
    assert 200 in [s.id for s in available_codecs()]
    assert SpecPlugin.loads == 0
    codec = get_codec(200)
    assert get_codec("InvPack") is codec and SpecPlugin.loads == 1
    mask = np.random.default_rng(0).random((13, 17)) < 0.3
    assert np.array_equal(codec.decode(codec.encode(mask), mask.shape), mask)
    assert resolve_codec("invpack") is codec
    # encode_auto stays with the built-ins unless asked
    assert encode_auto(mask)[0] in (0, 1, 2)
    assert encode_auto(mask, candidates=[200])[0] == 200

    report = plugins_report()
    entry = {p["name"]: p for p in report["plugins"]}["invpack-plugin"]
    assert entry["source"]["kind"] == "registered"
    assert entry["codecs"] == [
        {"id": 200, "name": "invpack", "description": "packbits of the inverted mask", "loader": entry["codecs"][0]["loader"]}
    ]
    assert entry["formats"] == []
    json.dumps(report)  # plain data
    text = format_plugins_report(report)
    assert "invpack-plugin" in text and "invpack" in text and "200" in text


def test_ready_codec_objects_and_classes_are_wrapped(plugins):
    plugins(ReadyPlugin(InvertedPackBits()), "ready-instance")
    assert isinstance(get_codec(200), InvertedPackBits)
    unregister_plugin("ready-instance")
    with pytest.raises(IIDCodecError, match="200"):
        get_codec(200)  # the cache followed the unregistration
    plugins(ReadyPlugin(InvertedPackBits), "ready-class")
    assert isinstance(get_codec("invpack"), InvertedPackBits)
    spec = {s.id: s for s in available_codecs()}[200]
    assert spec.description == "packbits of the inverted mask"


def test_unregister_by_object_and_unknown():
    plugin = SpecPlugin()
    register_plugin(plugin)
    try:
        assert get_codec(200)
    finally:
        assert unregister_plugin(plugin) is plugin
    with pytest.raises(IIDPluginError):
        unregister_plugin("no-such-plugin")
    with pytest.raises(IIDCodecError):
        get_codec(200)


def test_registering_twice_is_an_error(plugins):
    plugin = SpecPlugin()
    plugins(plugin, "twice")
    with pytest.raises(IIDPluginError):
        register_plugin(plugin, "twice-again")
    with pytest.raises(IIDPluginError):
        register_plugin(SpecPlugin(), "twice")


# --- conflicts ------------------------------------------------------------------------------


def test_same_id_conflict_names_both_plugins_and_is_rolled_back(plugins):
    with pytest.raises(IIDPluginError) as err:
        register_plugin(codec_plugin(1, "myrle"), "greedy")
    text = str(err.value)
    assert "id 1" in text and "builtin_codecs" in text and "greedy" in text and "myrle" in text
    assert get_plugin_manager().get_plugin("greedy") is None
    assert get_codec(1).name == "rle"


def test_same_name_conflict_names_both_plugins(plugins):
    with pytest.raises(IIDPluginError) as err:
        register_plugin(codec_plugin(300, "ZSTD"), "copycat")
    text = str(err.value)
    assert "zstd" in text.lower() and "builtin_codecs" in text and "copycat" in text
    assert get_plugin_manager().get_plugin("copycat") is None
    # between two third-party plugins too
    plugins(codec_plugin(301, "alpha"), "first")
    with pytest.raises(IIDPluginError) as err:
        register_plugin(codec_plugin(301, "beta"), "second")
    assert "'first'" in str(err.value) and "'second'" in str(err.value)


def test_conflict_registered_behind_the_api_raises_when_the_registry_is_built():
    pm = get_plugin_manager()
    pm.register(codec_plugin(2, "zz"), name="sneaky")
    try:
        with pytest.raises(IIDPluginError, match="sneaky"):
            get_codec(0)
    finally:
        pm.unregister(name="sneaky")
    assert get_codec(0).name == "packbits"


def test_misdeclared_codecs_are_refused(plugins):
    class Junk:
        @hookimpl
        def iidschema_codecs(self):
            return ["not a codec"]

    with pytest.raises(IIDPluginError, match="neither"):
        register_plugin(Junk(), "junk")
    with pytest.raises(IIDPluginError, match="uint16"):
        CodecSpec(70000, "big", "x:y")
    with pytest.raises(IIDPluginError, match="reserved"):
        CodecSpec(300, "auto", "x:y")
    with pytest.raises(IIDPluginError):
        CodecSpec(300, "nocolon", "just_a_module")
    # a loader that yields another codec than announced
    plugins(codec_plugin(302, "liar"), "liar")
    with pytest.raises(IIDPluginError, match="announced"):
        get_codec(302)


def test_codec_whose_import_fails_is_reported_not_fatal(plugins):
    plugins(codec_plugin(303, "missing", "iidschema_no_such_module_xyz:Codec"), "missing-dep")
    assert 303 in [s.id for s in available_codecs()]  # declared, so listed
    with pytest.raises(IIDCodecError, match="could not be loaded"):
        get_codec(303)
    with pytest.raises(IIDCodecError, match="could not be loaded"):
        get_codec("missing")
    assert any(f.name == "missing-dep" and "No module named" in f.error for f in failed_plugins())
    assert get_codec("rle").name == "rle"
    unregister_plugin("missing-dep")
    assert not any(f.name == "missing-dep" for f in failed_plugins())


# --- discovery ------------------------------------------------------------------------------


class FakeEntryPoint:
    """Stands in for an importlib.metadata.EntryPoint."""

    def __init__(self, name, value, error=None, obj=None):
        self.name, self.value, self.group, self.dist = name, value, "iidschema", None
        self._error, self._obj = error, obj

    def load(self):
        if self._error is not None:
            raise self._error
        return self._obj


def test_broken_entry_point_is_recorded_and_skipped(fresh_manager, caplog):
    broken = FakeEntryPoint("broken", "broken_pkg.plugin", error=ImportError("No module named 'broken_pkg'"))
    real_missing = importlib.metadata.EntryPoint(name="gone", value="iidschema_gone_xyz", group="iidschema")
    fresh_manager.setattr(manager, "iter_entry_points", lambda: [broken, real_missing] + real_entry_points())
    with caplog.at_level(logging.WARNING, logger="iidschema.plugins"):
        failures = failed_plugins()
    by_name = {f.name: f for f in failures}
    assert by_name["broken"].value == "broken_pkg.plugin"
    assert by_name["broken"].stage == "load"
    assert "ImportError" in by_name["broken"].error and "broken_pkg" in by_name["broken"].error
    assert "ModuleNotFoundError" in by_name["gone"].error
    assert any("broken" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # the built-ins loaded anyway, after the broken plugins
    assert [s.name for s in available_codecs()] == ["packbits", "rle", "zstd"]
    report = plugins_report()
    assert {f["name"] for f in report["failures"]} >= {"broken", "gone"}
    assert "broken_pkg.plugin" in format_plugins_report(report)


def test_entry_point_whose_hook_fails_or_conflicts_is_skipped(fresh_manager):
    failing = types.ModuleType("iidschema_test_failing_plugin")

    @hookimpl
    def iidschema_codecs():
        raise RuntimeError("boom")

    failing.iidschema_codecs = iidschema_codecs
    conflicting = types.ModuleType("iidschema_test_conflicting_plugin")

    @hookimpl
    def iidschema_codecs_conflict():
        return [CodecSpec(0, "mypackbits", "iidschema.codecs.packbits:PackBitsCodec")]

    conflicting.iidschema_codecs = iidschema_codecs_conflict
    eps = real_entry_points() + [
        FakeEntryPoint("failing", failing.__name__, obj=failing),
        FakeEntryPoint("conflicting", conflicting.__name__, obj=conflicting),
    ]
    fresh_manager.setattr(manager, "iter_entry_points", lambda: eps)
    by_name = {f.name: f for f in failed_plugins()}
    assert "boom" in by_name["failing"].error
    assert "builtin_codecs" in by_name["conflicting"].error and "id 0" in by_name["conflicting"].error
    pm = get_plugin_manager()
    assert pm.get_plugin("failing") is None and pm.get_plugin("conflicting") is None
    assert get_codec(0).name == "packbits"


def test_source_tree_fallback_registers_the_builtins(fresh_manager):
    fresh_manager.setattr(manager, "iter_entry_points", lambda: [])
    assert [s.name for s in available_codecs()] == ["packbits", "rle", "zstd"]
    pm = get_plugin_manager()
    assert pm.sources["builtin_codecs"]["kind"] == "fallback"
    assert pm.notes and "source tree" in pm.notes[0]
    assert failed_plugins() == []
    report = plugins_report()
    assert report["notes"] == pm.notes
    assert "Note:" in format_plugins_report(report)


def test_the_builtins_come_from_the_installed_entry_point():
    pm = get_plugin_manager()
    assert pm.sources["builtin_codecs"]["kind"] == "entry point"
    assert pm.sources["builtin_codecs"]["value"] == "iidschema.codecs.builtin"
    assert pm.project_name == "iidschema"


def test_listing_codecs_imports_no_codec_module():
    code = (
        "import sys, json\n"
        "import iidschema.codecs as c\n"
        "from iidschema.plugins.report import plugins_report, format_plugins_report\n"
        "names = [s.name for s in c.available_codecs()]\n"
        "format_plugins_report(plugins_report())\n"
        "heavy = [m for m in ('zstandard', 'iidschema.codecs.zstd', 'iidschema.codecs.rle', "
        "'iidschema.codecs.packbits') if m in sys.modules]\n"
        "c.get_codec('rle')\n"
        "print(json.dumps([names, heavy, 'iidschema.codecs.rle' in sys.modules, 'zstandard' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy, rle_loaded, zstd_loaded = json.loads(out.stdout)
    assert names == ["packbits", "rle", "zstd"]
    assert heavy == []
    assert rle_loaded and not zstd_loaded


def test_unknown_codec_id_is_a_codec_error_naming_it():
    with pytest.raises(IIDCodecError) as err:
        get_codec(4321)
    assert "4321" in str(err.value) and "docs/CODECS.md" in str(err.value)
    with pytest.raises(IIDCodecError, match="40000"):
        get_codec(40000)
    with pytest.raises(IIDCodecError, match="upgrade iidschema"):
        get_codec(99)


def test_report_shape_of_the_builtins():
    report = plugins_report()
    assert report["entry_point_group"] == "iidschema"
    builtin = {p["name"]: p for p in report["plugins"]}["builtin_codecs"]
    assert [(c["id"], c["name"]) for c in builtin["codecs"]] == [(0, "packbits"), (1, "rle"), (2, "zstd")]
    assert builtin["formats"] == []
    text = format_plugins_report(report)
    for word in ("builtin_codecs", "packbits", "rle", "zstd", "Formats", "Failed plugins"):
        assert word in text


def test_the_documented_plugin_example_works(monkeypatch, plugins):
    """docs/CODECS.md's complete example, run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "CODECS.md").read_text(encoding="utf-8")
    section = text[text.index("## 6. Writing a third-party codec plugin") :]
    blocks = dict(re.findall(r"`iidschema_colmajor/(\w+)\.py`:\s*```python\n(.*?)```", section, re.S))
    assert set(blocks) == {"plugin", "codec"}
    package = types.ModuleType("iidschema_colmajor")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "iidschema_colmajor", package)
    for name in ("codec", "plugin"):
        module = types.ModuleType(f"iidschema_colmajor.{name}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        exec(compile(blocks[name], f"docs/CODECS.md:{name}.py", "exec"), module.__dict__)
    plugins(sys.modules["iidschema_colmajor.plugin"], "colmajor")
    codec = get_codec("colmajor")
    assert codec.id == 40000
    mask = np.random.default_rng(3).random((7, 11)) < 0.5
    assert np.array_equal(codec.decode(codec.encode(mask), mask.shape), mask)
    with pytest.raises(IIDCodecError):
        codec.decode(b"\0", mask.shape)


def test_file_round_trip_with_a_third_party_codec_and_unknown_id_on_open(plugins, tmp_path):
    """A file written with a plugin's codec reads back while the plugin is
    installed; without it, opening names the missing codec id."""
    from iidschema import IIDCodecError, IIDFile

    name = plugins(SpecPlugin(), "invpack-plugin")
    rng = np.random.default_rng(4)
    f = IIDFile()
    masks = [rng.random((9, 14)) < 0.4, np.ones((3, 70_000 // 1000), bool)]
    f.add(b"a", b"d", (100_000, 5, 100_009, 19), masks[0])
    f.add(b"b", b"d", (7, 8, 10, 78), masks[1])
    path = tmp_path / "third.iid"
    f.save(path, version=1, codec=200)
    with IIDFile(path) as g:
        assert {r.codec for e in g.fetch(everything=True) for r in e.seg.regions} == {200}
        for e, m in zip(g, masks):
            assert np.array_equal(e.seg.mask(), m)
    unregister_plugin(name)
    with pytest.raises(IIDCodecError, match="200"):
        IIDFile(path)
