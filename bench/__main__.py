"""`python -m bench [--quick] [--only NAME ...]`: the benchmarks, each as a ratio against a
baseline measured in the same run.

Writes bench/results/latest.json on every run, and docs/benchmarks.md on a full run (neither
--quick nor --only; --docs forces it). A benchmark that fails is reported and the others still
run; the exit code is then 1. A missed target is reported but is not a failure: benchmarks
measure, tests judge.

A benchmark is a module function `run(quick: bool)` returning a dict with "name", "ratio",
"target", "baseline", "ours", "unit", "notes" (optionally "title", "details"), or a list of
such dicts. Register it in BENCHMARKS; modules marked optional are run when present."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOCS = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    function: str = "run"
    optional: bool = False  # run only when the module exists (written by someone else)


BENCHMARKS = [
    Benchmark("server_flavour", "bench.flavour"),  # 0
    Benchmark("get_page", "bench.content", "run_get_page"),  # 1
    Benchmark("bulk_import", "bench.content", "run_bulk_import"),  # 2
    Benchmark("vector_search", "bench.vector_search", optional=True),  # 3
    Benchmark("worker_pipeline", "bench.worker_pipeline", optional=True),  # 4
    Benchmark("embedder", "bench.embedder", optional=True),  # 5
    Benchmark("rpc_metrics", "bench.rpc_metrics"),  # 6
]


def present(benchmark: Benchmark) -> bool:
    return importlib.util.find_spec(benchmark.module) is not None


def run_one(benchmark: Benchmark, quick: bool) -> list[dict[str, Any]]:
    started = time.perf_counter()
    try:
        function = getattr(importlib.import_module(benchmark.module), benchmark.function)
        out = function(quick)
        results = [report.check(dict(r)) for r in (out if isinstance(out, list) else [out])]
    except Exception as exc:
        traceback.print_exc()
        return [{"name": benchmark.name, "error": f"{type(exc).__name__}: {exc}"}]
    seconds = time.perf_counter() - started
    for r in results:
        r["seconds"] = round(seconds / len(results), 1)
        verdict = "met" if r["met"] else "MISSED"
        print(
            f"{r['name']}: ours {r['ours']:,} {r['unit']}, baseline {r['baseline']:,} "
            f"{r['unit']}, ratio {r['ratio']:.3f} (target >= {r['target']}: {verdict}) "
            f"[{seconds:.0f} s]\n    {r['notes']}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls: about a minute")
    parser.add_argument(
        "--only",
        action="append",
        choices=[b.name for b in BENCHMARKS],
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument(
        "--docs", action="store_true", help="write docs/benchmarks.md even on a partial run"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            state = "" if present(b) else " (module not present yet)"
            print(f"{b.name}: {b.module}.{b.function}{state}")
        return 0

    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    absent = [b.name for b in chosen if not present(b)]
    for name in absent:
        if args.only:
            print(f"{name}: its module is not present, skipped", flush=True)
    data: dict[str, Any] = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mode": "quick" if args.quick else "full",
        "machine": report.machine(),
        "results": [],
        "absent": absent,
    }
    started = time.perf_counter()
    for benchmark in chosen:
        if benchmark.name in absent:
            continue
        print(f"--- {benchmark.name} ({benchmark.module})", flush=True)
        data["results"] += run_one(benchmark, args.quick)
    data["seconds"] = round(time.perf_counter() - started, 1)
    data["machine"]["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data["command"] = data["command"].strip()

    report.write_json(RESULTS, data)
    written = [str(RESULTS.relative_to(ROOT))]
    if args.docs or (not args.quick and not args.only):
        report.write_markdown(DOCS, data)
        written.append(str(DOCS.relative_to(ROOT)))
    failed = [r["name"] for r in data["results"] if "error" in r]
    missed = [r["name"] for r in data["results"] if "error" not in r and not r["met"]]
    print(
        f"done in {data['seconds']:.0f} s; wrote {', '.join(written)}"
        + (f"; targets missed: {', '.join(missed)}" if missed else "")
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
