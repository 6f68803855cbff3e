"""Every command that takes a path, given RELATIVE paths from a working directory that is not the repository.

The README's main command once failed only this way: `lugha quickstart` without `--out` writes to the
relative `lugha-quickstart/`, and a library `os.chdir` made that path resolve under a temporary folder at
the int8 step. Paths are now made absolute once, at the CLI boundary; this test runs each command as a
user types it (a fresh process, relative paths, cwd = an empty folder) and checks its output landed
where the user asked. The quickstart itself runs this way in tests/test_quickstart.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_serve_api import photo  # noqa: E402 (tests/ is on sys.path)
from test_serve_db import _filled_db  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def lugha(cwd: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lugha.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, f"lugha {' '.join(argv)} (cwd {cwd}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_paths_are_made_absolute_at_the_cli_boundary(tmp_path, monkeypatch):
    from lugha.cli import build_parser

    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    assert parser.parse_args(["quickstart"]).out == tmp_path / "lugha-quickstart"  # the default, too
    args = parser.parse_args(["bench", "b", "--json", "-", "--html", "r.html"])
    assert (args.bundle, args.json, args.html) == (str(tmp_path / "b"), "-", str(tmp_path / "r.html"))
    assert parser.parse_args(["serve", "x"]).db == tmp_path / "feedback.sqlite"
    assert parser.parse_args(["export", "../run", "--out", "b"]).run == str(tmp_path.parent / "run")


def test_no_chdir_in_the_library():
    """os.chdir is process-wide: unsafe beside threads and wrong for relative paths."""
    offenders = [f"{p.relative_to(REPO)}:{i}" for folder in ("kit", "cli", "data", "training", "export", "runtimes")
                 for p in (REPO / folder).rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"\bos\.chdir\(|\bchdir\(", line)]
    assert not offenders, offenders


@pytest.mark.slow
def test_every_path_command_with_relative_paths(tmp_path):
    work = tmp_path / "elsewhere"  # the user's folder: not the repository, nothing in it
    work.mkdir()
    shutil.copy(REPO / "configs" / "test-tiny.yaml", work / "tiny.yaml")

    # data: demo, check, split, import
    lugha(work, "data", "demo", "--out", "demo", "--limit", "40", "--image-size", "64")
    assert (work / "demo" / "manifest.jsonl").is_file()
    lugha(work, "data", "check", "demo/manifest.jsonl")
    assert (work / "demo" / "manifest.clean.jsonl").is_file()
    lugha(work, "data", "split", "demo/manifest.jsonl", "--out", "resplit.jsonl", "--seed", "1")
    assert (work / "resplit.jsonl").is_file()
    (work / "pics").mkdir()
    (work / "pics" / "cat.png").write_bytes(photo(seed=3))
    (work / "table.csv").write_text("image,text,lang\npics/cat.png,paka,sw\n", encoding="utf-8")
    lugha(work, "data", "import", "csv", "table.csv", "--lang-col", "lang", "--out", "imported/manifest.jsonl")
    row = json.loads((work / "imported" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert (work / "imported" / row["image"]).is_file()

    # train, eval, export (fp32 + int8: the int8 quantizer is where the relative --out broke), bundle
    lugha(work, "train", "tiny.yaml", "--out", "run", "--set", "data.manifest=demo/manifest.jsonl", "--quiet")
    assert (work / "run" / "best").is_dir()
    lugha(work, "eval", "run", "--split", "test", "--json")
    # a random-init tiny model: its per-language drops are noise on a few images, not what this test is about
    lugha(work, "export", "run", "--out", "bundle", "--formats", "onnx", "--precision", "fp32,int8", "--allow-drop")
    assert (work / "bundle" / "manifest.json").is_file()
    assert not [p for p in work.rglob("*") if p.name.startswith(".bundle.partial")]
    lugha(work, "bundle", "verify", "bundle")
    lugha(work, "bundle", "info", "bundle")

    # bench writes its JSON and HTML where it was told
    lugha(work, "bench", "bundle", "--backends", "onnxruntime", "--batch", "1", "--warmup", "1", "--repeats", "2",
          "--json", "out/bench.json", "--html", "out/report.html")
    assert json.loads((work / "out" / "bench.json").read_text(encoding="utf-8"))
    assert (work / "out" / "report.html").stat().st_size > 0

    # serve --db: the database is created where the user said, relative to where they stood
    proc = subprocess.Popen([sys.executable, "-m", "lugha.cli", "serve", "bundle", "--port", "0", "--db",
                             "field/feedback.sqlite", "--quiet"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline, seen = time.monotonic() + 90, ""
        for line in proc.stdout:  # type: ignore[union-attr]
            seen += line
            if "listening on" in line or time.monotonic() > deadline:
                break
        assert "listening on" in seen, seen[-2000:]
        assert (work / "field" / "feedback.sqlite").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # feedback export from a relative --db into a relative --out
    (work / "img0.png").write_bytes(photo(seed=2))
    db = _filled_db(work / "judged.sqlite", work / "img0.png")
    # only reviewed rows are exported by default: approve them as the admin page's review does
    assert db.set_review([r["id"] for r in db.review_queue()], approve=True) == 4
    db.close()
    lugha(work, "feedback", "export", "--db", "judged.sqlite", "--out", "next/manifest.jsonl")
    rows = [json.loads(line) for line in (work / "next" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3
    assert all((work / "next" / r["image"]).is_file() for r in rows)  # images copied beside the relative --out
