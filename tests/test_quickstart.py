"""The README's main command, in its smoke variant, inside a network namespace with no network.

Proves the whole pipeline (demo data -> train -> gated export -> device tests -> bench) runs offline:
nothing reaches out at run time (`unshare -n` leaves only a downed loopback). It runs as the README
tells a user to: no `--out` (the default, relative `lugha-quickstart/`), here from a folder that is
not the repository, so a relative path that resolves anywhere but the user's folder fails it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _unshare_works() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-n", "true"],
                                                            capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -n` (root or user namespaces)")
def test_quickstart_smoke_runs_with_no_network(tmp_path):
    out = tmp_path / "lugha-quickstart"  # where the default, relative --out must land
    probe = subprocess.run(["unshare", "-n", sys.executable, "-c",
                            "import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)"],
                           capture_output=True, text=True)
    assert probe.returncode != 0, "the namespace must have no network for this test to mean anything"
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "lugha.cli", "quickstart", "--smoke"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "quickstart finished" in proc.stdout
    smoke = out / "smoke"
    verify = subprocess.run([sys.executable, "-m", "lugha.cli", "bundle", "verify", str(smoke / "bundle"), "--json"],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    bench = json.loads((smoke / "bench.json").read_text())
    assert bench, "bench wrote an empty report"
    assert (smoke / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert (smoke / "device_report.json").exists()
