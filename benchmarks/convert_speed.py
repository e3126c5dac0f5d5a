"""Speed and peak memory of the Retail Rocket converter on a full-size events file.

Generates (once; cached under ``benchmarks/data/``, git-ignored) a synthetic ``events.csv`` of
the real file's size (2,756,101 rows) with ``recbole_srgnn.data.synthetic.write_events_csv``,
then converts it ``--runs`` times, each in a fresh Python process with ``force=True`` (never the
cached path), recording wall time (inside the process: the conversion call; outside: the whole
process incl. interpreter start and imports) and the process's peak RSS (``ru_maxrss``).

It also times the test suite's naive pure-Python reference of the protocol against the
converter on a smaller file (``--reference_events`` rows, default 200k), checking that both
produce the same bytes, and reports the ratio.

Results: ``benchmarks/results/convert_speed.md`` and ``.json``, with the machine (cores, CPU
model, RAM) and its load average before and after (the machine may be shared).

    python benchmarks/convert_speed.py [--runs 3] [--events 2756101] [--reference_events 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recbole_srgnn.errors import OneLineArgumentParser, cli_errors

from recbole_srgnn.experiments.machine import machine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data"
RESULTS = REPO / "benchmarks" / "results"
FULL_ROWS = 2_756_101
FULL_ITEMS = 235_000  # distinct items of the real file (~235k)

CHILD = r"""
import json, resource, sys, time
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
began = time.perf_counter()
from recbole_srgnn.data.retailrocket import convert_events
from recbole_srgnn.data.sessions import ConvertOptions
imported = time.perf_counter()
cpu_before = cpu()
stats = convert_events(sys.argv[1], sys.argv[2], ConvertOptions(), force=True, progress=False)
done = time.perf_counter()
print(json.dumps({
    "convert_s": done - imported,
    "convert_cpu_s": cpu() - cpu_before,
    "import_s": imported - began,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "reused": stats["reused"],
    "splits": stats["splits"],
    "raw": stats["raw"],
    "rounds": stats["filters"]["iterated"]["rounds_run"],
}))
"""


def events_file(n_rows: int, seed: int, n_items: int | None, folder: Path = DATA) -> Path:
    """The cached synthetic events file in ``folder`` (generated on first use)."""
    from recbole_srgnn.data.synthetic import write_events_csv

    suffix = f"-items{n_items}" if n_items else ""
    path = folder / f"events-{n_rows}-seed{seed}{suffix}.csv"
    if not path.is_file():
        print(f"generating {path} ...", flush=True)
        began = time.perf_counter()
        write_events_csv(path, n_events=n_rows, seed=seed, n_items=n_items)
        print(f"  {time.perf_counter() - began:.1f} s", flush=True)
    return path


def run_child(events: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, str(events), str(out)], env=env,
                            capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"conversion failed:\n{result.stderr}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["process_wall_s"] = wall
    return data


def reference_comparison(events: Path, workdir: Path) -> dict:
    """The naive pure-Python reference (tests/test_retailrocket.py) vs the converter."""
    import csv

    sys.path.insert(0, str(REPO / "tests"))
    from test_retailrocket import reference_convert  # noqa: E402

    from recbole_srgnn.data.retailrocket import convert_events
    from recbole_srgnn.data.sessions import ConvertOptions

    options = ConvertOptions()
    began = time.perf_counter()
    with open(events, newline="") as handle:
        rows = [(int(r["timestamp"]), int(r["visitorid"]), r["event"], int(r["itemid"]))
                for r in csv.DictReader(handle)]
    expected = reference_convert(rows, options)
    reference_s = time.perf_counter() - began
    out = workdir / "ref"
    began = time.perf_counter()
    convert_events(events, out, options, force=True, progress=False)
    converter_s = time.perf_counter() - began
    same = expected is not None and all(
        (out / f"ref.{split}.inter").read_text() == text for split, text in expected.items())
    return {"rows": len(rows), "reference_s": reference_s, "converter_s": converter_s,
            "speedup": reference_s / converter_s, "identical_output": same}


@cli_errors
def main(argv=None) -> int:
    parser = OneLineArgumentParser(flag_aliases={"--out": "--output", "--results": "--output"}, description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=FULL_ROWS)
    parser.add_argument("--items", type=int, default=FULL_ITEMS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference_events", type=int, default=200_000,
                        help="rows for the naive-reference comparison (0 = skip)")
    parser.add_argument("--output", type=Path, default=RESULTS / "convert_speed")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))

    events = events_file(args.events, args.seed, args.items)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="convert-speed-") as tmp:
        for k in range(args.runs):
            data = run_child(events, Path(tmp) / "bench")
            runs.append(data)
            print(f"run {k + 1}: convert {data['convert_s']:.2f} s (CPU {data['convert_cpu_s']:.2f} s), process {data['process_wall_s']:.2f} s, "
                  f"peak RSS {data['peak_rss_mib']:.0f} MiB, load {os.getloadavg()[0]:.2f}", flush=True)
        reference = None
        if args.reference_events:
            small = events_file(args.reference_events, args.seed, None)
            reference = reference_comparison(small, Path(tmp))
            print(f"reference on {reference['rows']:,} rows: naive {reference['reference_s']:.2f} s, "
                  f"converter {reference['converter_s']:.2f} s ({reference['speedup']:.0f}x), "
                  f"identical output: {reference['identical_output']}", flush=True)
    load_after = os.getloadavg()

    convert = sorted(r["convert_s"] for r in runs)
    cpu = sorted(r["convert_cpu_s"] for r in runs)
    process = sorted(r["process_wall_s"] for r in runs)
    rss = max(r["peak_rss_mib"] for r in runs)
    first = runs[0]
    result = {
        "benchmark": "retailrocket converter, default protocol (docs/design.md §2), force=True",
        "input": {"path": str(events.relative_to(REPO)), "bytes": events.stat().st_size,
                  "generator": f"recbole_srgnn.data.synthetic.write_events_csv(n_events={args.events}, "
                               f"seed={args.seed}, n_items={args.items})",
                  "raw": first["raw"]},
        "output": {"splits": first["splits"], "filter_rounds": first["rounds"]},
        "machine": machine(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                  if k in ("convert_s", "convert_cpu_s", "import_s", "process_wall_s", "peak_rss_mib")}
                 for r in runs],
        "convert_s": {"min": round(convert[0], 3), "median": round(convert[len(convert) // 2], 3),
                      "max": round(convert[-1], 3)},
        "convert_cpu_s": {"min": round(cpu[0], 3), "median": round(cpu[len(cpu) // 2], 3),
                          "max": round(cpu[-1], 3)},
        "process_wall_s": {"min": round(process[0], 3), "median": round(process[len(process) // 2], 3),
                           "max": round(process[-1], 3)},
        "peak_rss_mib": round(rss, 1),
        "reference": None if reference is None else {k: (round(v, 3) if isinstance(v, float) else v)
                                                     for k, v in reference.items()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.output.with_suffix('.md')} and .json")
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    raw = r["input"]["raw"]
    by_type = raw["events_by_type"]
    total = sum(by_type.values())
    lines = [
        "# Retail Rocket converter: speed and peak memory",
        "",
        f"Measured {r['when']} by `python benchmarks/convert_speed.py` "
        f"({len(r['runs'])} runs, each a fresh process, `force=True`, default protocol).",
        "",
        "## Result",
        "",
        "| measure | min | median | max |",
        "|---|---|---|---|",
        f"| conversion call (read, protocol, 3 files + stats written), s | {r['convert_s']['min']:.2f} | "
        f"{r['convert_s']['median']:.2f} | {r['convert_s']['max']:.2f} |",
        f"| CPU time of the conversion call (user + sys, all threads), s | {r['convert_cpu_s']['min']:.2f} | "
        f"{r['convert_cpu_s']['median']:.2f} | {r['convert_cpu_s']['max']:.2f} |",
        f"| whole process (interpreter start + imports + conversion), s | {r['process_wall_s']['min']:.2f} | "
        f"{r['process_wall_s']['median']:.2f} | {r['process_wall_s']['max']:.2f} |",
        "",
        f"Peak RSS of the whole process (max over runs): **{r['peak_rss_mib']:.0f} MiB**. "
        "Targets: under 10 s, under 1.5 GB.",
        "",
        f"Load average (1/5/15 min) before: {r['load_before']}, after: {r['load_after']} "
        f"on {m.get('cores')} cores (the machine was shared with other jobs; numbers are noisy).",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores')} cores",
        f"- RAM: {m.get('memory_gib', '?')} GiB",
        f"- Python {m.get('python')}, {m.get('platform')}",
        "",
        "## Input (synthetic, real file's schema and size)",
        "",
        f"- `{r['input']['path']}` ({r['input']['bytes'] / 1e6:.1f} MB), {r['input']['generator']}",
        f"- {raw['rows']:,} rows: view {by_type['view'] / total:.1%}, addtocart {by_type['addtocart'] / total:.1%}, "
        f"transaction {by_type['transaction'] / total:.1%}; {raw['visitors']:,} visitors, {raw['items']:,} items, "
        f"{raw['first_event'][:10]} .. {raw['last_event'][:10]}",
        f"- output: " + ", ".join(f"{name} {s['sessions']:,} sessions / {s['cases']:,} cases / {s['items']:,} items"
                                  for name, s in r["output"]["splits"].items())
        + f"; {r['output']['filter_rounds']} filter rounds",
        "",
    ]
    if r["reference"]:
        ref = r["reference"]
        lines += [
            "## Naive reference",
            "",
            f"The test suite's pure-Python reference of the protocol (one event at a time) on "
            f"{ref['rows']:,} rows: {ref['reference_s']:.2f} s vs the converter's "
            f"{ref['converter_s']:.2f} s in the same process (**{ref['speedup']:.0f}x**); "
            f"identical output: {ref['identical_output']}.",
            "",
        ]
    lines += ["## Runs", "", "| run | convert s | convert CPU s | imports s | process s | peak RSS MiB |",
              "|---|---|---|---|---|---|"]
    for k, run in enumerate(r["runs"], start=1):
        lines.append(f"| {k} | {run['convert_s']:.2f} | {run['convert_cpu_s']:.2f} | {run['import_s']:.2f} | "
                     f"{run['process_wall_s']:.2f} | {run['peak_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
