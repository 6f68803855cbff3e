"""The README's fusion-heads table: `lugha experiments fusion --json`, plus a 95 % interval per accuracy.

  python benchmarks/fusion_heads.py --out benchmarks/fusion_heads.json -- --data DEMO/manifest.jsonl
  python benchmarks/fusion_heads.py --out /tmp/f.json -- --data DEMO/manifest.jsonl --budget-steps 50

Everything after ``--`` goes to `lugha experiments fusion` unchanged (see its --help), which runs in this
process exactly as on the command line. The report it prints with --json is written to --out with, for
every head, ``ci95``: a Wilson 95 % interval (scipy) for each accuracy column. The unit is the test image,
as in the report's ``acc_se``: each test emoji is captioned in every language, so its rows are not
independent and the honest sample size is ``protocol.test_images``, not the number of rows. The
accuracies are means over languages, so the interval uses k = round(acc * test_images). Also records the
wall time of the whole run. A benchmark, not a test: minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

ACC_COLUMNS = ("acc", "acc_seen", "acc_heldout", "acc_image_only", "acc_text_only", "majority_acc")


def wilson95(acc: float, n: int) -> list[float]:
    from scipy.stats import binomtest

    ci = binomtest(round(acc * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def add_intervals(report: dict) -> dict:
    n = int(report["protocol"]["test_images"])
    for row in report["heads"]:
        row["ci95"] = {k: wilson95(row[k], n) for k in ACC_COLUMNS if row.get(k) is not None}
    report["ci95_method"] = (f"Wilson 95 % interval (scipy.stats.binomtest(...).proportion_ci) with the "
                             f"{n} test images as the independent unit, k = round(acc * {n})")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="where the JSON report goes")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not rest:
        ap.error("pass the experiment's arguments after --, at least --data MANIFEST")
    from lugha.cli import main as lugha

    command = ["experiments", "fusion", *rest, "--json"]
    start, buf = time.monotonic(), io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = lugha(command)
    if rc:
        return rc
    report = add_intervals(json.loads(buf.getvalue()))
    report["command"] = "lugha " + " ".join(command)
    report["wall_s"] = round(time.monotonic() - start, 1)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for r in report["heads"]:
        lo, hi = r["ci95"]["acc"]
        print(f"{r['head']:10s} acc {r['acc']:.3f} [{lo:.3f}, {hi:.3f}]  seen {r['acc_seen']:.3f}  held-out "
              f"{r['acc_heldout']:.3f}  image only {r['acc_image_only']:.3f}  text only {r['acc_text_only']:.3f}")
    print(f"wrote {args.out} ({report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
