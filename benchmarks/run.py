"""Run the speed benchmarks, print the table, write the results as JSON.

Usage::

    .venv/bin/python -m benchmarks.run            # full size (under 30 min on 2 cores)
    .venv/bin/python -m benchmarks.run --quick    # smaller inputs
    .venv/bin/python -m benchmarks.run --only pseudobulk gctx --reps 5

Results go to ``$CPB_HOME/benchmarks/results[-quick].json`` (``$CPB_HOME``
defaults to ``.cpb/`` in the checkout), or to ``--out``. The committed
numbers live in ``docs/benchmarks.md``. When the ``fast_de`` rows ran, the
projection of the whole compendium's DE (``benchmarks/projection.py``) goes
into the JSON (``projection``) and, as Markdown, to ``<out>-projection.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks import REPS, machine

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ["pseudobulk", "gctx", "harmonize", "de", "contrasts", "bootstrap", "lpm", "de_memory",
              "reader_memory", "agreement", "fast_de"]


def _fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _fmt_ratio(r: dict) -> str:
    if r.get("ratio") is None:
        return "–"
    if r["benchmark"] == "de_fit":
        return f"{r['ratio']:.2f}× (overhead {r['overhead']:.2f}×)"
    if r["benchmark"] == "fast_de_floor":
        return f"{r['ratio']:.3f}× (fast = {r['multiple_of_floor']:.0f}× floor)"
    return f"{r['ratio']:.1f}×"


def table(rows: list[dict]) -> str:
    """A Markdown table of the results."""
    head = ["benchmark", "case", "input", "data", "project (median)", "baseline (median)",
            "ratio baseline÷project", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["benchmark"], r["case"], r["size"], r["data"], _fmt_s(r["project_s"]),
                 _fmt_s(r["baseline_s"]), _fmt_ratio(r), r["check"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def default_out(quick: bool) -> Path:
    home = Path(os.environ.get("CPB_HOME") or REPO / ".cpb")
    return home / "benchmarks" / ("results-quick.json" if quick else "results.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs")
    ap.add_argument("--reps", type=int, default=REPS, help=f"repetitions per timing, median reported (default {REPS}, at least 3)")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    ap.add_argument("--out", type=Path, help="JSON results file (default $CPB_HOME/benchmarks/results.json)")
    args = ap.parse_args(argv)
    if args.reps < 3:
        ap.error("--reps must be at least 3 (medians of at least three runs)")

    info = machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory']}, Python {info['python']}, "
          f"numpy {info['numpy']}, scipy {info['scipy']}, pandas {info['pandas']}, h5py {info['h5py']}; "
          f"load average at start {info['loadavg_at_start']}", flush=True)
    rows: list[dict] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    for name in args.only or BENCHMARKS:
        t0 = time.perf_counter()
        print(f"[{name}] running{' (quick)' if args.quick else ''} …", flush=True)
        try:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
            got = mod.run(quick=args.quick, reps=args.reps)
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
            continue
        rows.extend(got)
        for r in got:
            print(f"  {r['case']}: project {_fmt_s(r['project_s'])}, baseline {_fmt_s(r['baseline_s'])}, "
                  f"ratio {_fmt_ratio(r)}; {r['check']}", flush=True)
            if r.get("ok") is False:
                failed.append(f"{name}: {r['case']}")
        print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)

    if {"de", "fast_de"} & set(args.only or BENCHMARKS):
        try:
            import rpy2.robjects as ro
            info["R"] = str(ro.r("R.version.string")[0])
            info["limma"] = str(ro.r("as.character(packageVersion('limma'))")[0])
        except Exception:  # noqa: BLE001 - versions are informative only
            pass
    projection, projection_md = None, ""
    if any(r["benchmark"] == "fast_de" for r in rows):
        try:  # the whole compendium's DE from this run's per-sample costs (benchmarks/projection.py)
            from benchmarks.projection import compendium
            projection, projection_md = compendium(rows)
        except Exception:  # noqa: BLE001 - a failed projection is reported, not fatal to the table
            traceback.print_exc()
            failed.append("projection")
    total = time.perf_counter() - t_all
    out = args.out or default_out(args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": dt.date.today().isoformat(), "quick": args.quick, "reps": args.reps,
               "total_s": round(total, 1), "machine": info, "results": rows, "failed": failed,
               "projection": projection}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    tmp.replace(out)
    print()
    print(table(rows))
    if projection_md:
        md = out.with_name(out.stem + "-projection.md")
        md.write_text(projection_md + "\n", encoding="utf-8")
        print(f"\nProjection (written to {md}):\n\n{projection_md}")
    print(f"\ntotal {total:.0f} s; results written to {out}")
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
