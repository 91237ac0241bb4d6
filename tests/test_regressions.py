"""Every input under tests/regressions/ (see its README.md) stays fixed."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest

import iidschema
import iidschema.masks
from iidschema.validate import validate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fuzz"))
sys.path.insert(0, str(HERE))
import iidfuzz  # noqa: E402
from test_fuzz import check_reads_or_raises, check_validate_agrees  # noqa: E402

FILES = sorted((HERE / "regressions").glob("*.iid"))


def test_there_are_regression_inputs() -> None:
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_regression_input(path: Path) -> None:
    data = path.read_bytes()
    check_reads_or_raises(path.name, data)
    check_validate_agrees(path.name, data)


@pytest.mark.parametrize("name, code", [("v0-deeply-nested-meta.iid", "IID060"), ("v0-deeply-nested-group-table.iid", "IID062")])
def test_deeply_nested_json_is_a_format_error(name: str, code: str) -> None:
    data = (HERE / "regressions" / name).read_bytes()
    with pytest.raises(iidschema.IIDFormatError, match="nested too deeply"):
        iidfuzz.read_everything(data)
    assert code in {f.code for f in validate(data)}


def _peak_bytes(fn):
    """``(fn(), peak bytes traced while it ran)``."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_overlapping_regions_do_not_amplify_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment of 64 identical 512x512 regions (2.5 KB of file) must not
    keep 64 decoded masks alive at once: decoding a segment should cost
    about one region plus the segment mask, not the sum of all regions."""
    data = (HERE / "regressions" / "v1-overlapping-regions-amplification.iid").read_bytes()
    monkeypatch.setattr(iidschema.masks, "MAX_MASK_PIXELS", 512 * 512)

    def decode() -> None:
        try:
            with iidschema.IIDFile(data) as f:
                f[0].seg.mask()
                f.at(0, 0)
        except iidschema.IIDError:
            pass  # refusing such a segment is a fix too

    peak = _peak_bytes(decode)[1]
    assert peak < 4 * 512 * 512 + 2**20, f"decoding a {len(data)}-byte file allocated {peak / 2**20:.1f} MB"


def test_validate_does_not_amplify_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (HERE / "regressions" / "v1-overlapping-regions-amplification.iid").read_bytes()
    monkeypatch.setattr(iidschema.masks, "MAX_MASK_PIXELS", 512 * 512)
    findings, peak = _peak_bytes(lambda: validate(data))
    assert [f.code for f in findings] == ["IID053"]
    assert peak < 4 * 512 * 512 + 2**20
