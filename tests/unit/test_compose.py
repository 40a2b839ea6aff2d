"""docker-compose.yaml is valid against the compose specification (no engine runs here)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_compose_file_is_valid_against_the_compose_spec():
    exe = Path(sys.executable).with_name("check-jsonschema")
    if not exe.exists():
        exe = shutil.which("check-jsonschema")
    if not exe:
        pytest.fail("check-jsonschema is not installed: run scripts/install.sh --dev")
    res = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
