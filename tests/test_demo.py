"""The main job of the README's quick start: ``iidschema demo``."""

from __future__ import annotations

import io
import subprocess
import sys

from iidschema.demo import run_demo


def test_demo_runs_and_checks_every_version(tmp_path):
    out = io.StringIO()
    assert run_demo(str(tmp_path / "demo.iid"), out=out) == 0
    text = out.getvalue()
    assert "demo ok" in text
    assert "v0 " in text and "v1 " in text and "v2 " in text and "every mask read back identical" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.iid"]  # the other versions were removed


def test_demo_command_exits_zero():
    done = subprocess.run([sys.executable, "-m", "iidschema", "demo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("demo ok")
