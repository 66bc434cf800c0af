"""Gather finished ``trace run`` directories into one committed result: JSON and a markdown table.

Each run directory holds ``results.json``, ``config.json`` and ``stages/*.json``; a
``time.txt`` beside it (the output of ``/usr/bin/time -v``) adds the wall clock and peak
RSS. With several runs (different ``--seed``), the table shows each method's success per
run and across runs (mean and standard deviation), so the variance between pipeline seeds
is visible next to each run's own 95% CI.

    /usr/bin/time -v trace run --name s0 --seed 0 2> runs/s0/time.txt
    python benchmarks/collect_runs.py runs/s0 runs/s1 runs/s2 --name trace-run-scorer \
        --command "trace run --name sN --seed N"
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import git_commit, machine_info  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _time(path: Path) -> dict[str, float]:
    """Wall clock (s) and peak RSS (GB) from a ``/usr/bin/time -v`` log, when there is one."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    out: dict[str, float] = {}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        out["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        out["peak_rss_gb"] = int(rss.group(1)) / 1024**2
    return out


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """One run's results, config, stage timings and (if logged) wall clock and peak RSS."""
    d = Path(run_dir)
    stages = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((d / "stages").glob("*.json"))}
    return {
        "dir": str(d),
        "config": json.loads((d / "config.json").read_text(encoding="utf-8")),
        "results": json.loads((d / "results.json").read_text(encoding="utf-8")),
        "stages_s": {k: v.get("seconds") for k, v in stages.items() if isinstance(v, dict)},
        **_time(d / "time.txt"),
    }


def markdown(runs: list[dict[str, Any]], command: str, commit: str, machine: dict[str, Any]) -> str:
    lines = [
        f"Command: `{command}`. Machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} CPUs, no GPU; "
        f"commit `{commit}`.",
        "",
    ]
    methods = list(runs[0]["results"]["methods"])
    seeds = [r["config"].get("seed") for r in runs]
    lines += [
        "| method | "
        + " | ".join(f"success, seed {s} (95% CI)" for s in seeds)
        + (" | mean ± sd across runs |" if len(runs) > 1 else " |")
        + " rollouts used |",
        "|---|" + "---|" * len(runs) + ("---|" if len(runs) > 1 else "") + "---:|",
    ]
    for m in methods:
        cells, values = [], []
        for r in runs:
            x = r["results"]["methods"].get(m)
            if x is None:
                cells.append("–")
                continue
            values.append(x["success"])
            cells.append(f"{x['success']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]")
        spread = ""
        if len(runs) > 1:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            spread = f" {statistics.mean(values):.3f} ± {sd:.3f} |"
        used = runs[0]["results"]["methods"][m]["rollouts_used"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |" + spread + f" {used} |")
    lines += [
        "",
        "| run | wall clock | peak RSS | " + " | ".join(runs[0]["stages_s"]) + " |",
        "|---|---:|---:|" + "---:|" * len(runs[0]["stages_s"]),
    ]
    for r in runs:
        wall = f"{r['wall_s'] / 60:.1f} min" if "wall_s" in r else "–"
        rss = f"{r['peak_rss_gb']:.1f} GB" if "peak_rss_gb" in r else "–"
        secs = " | ".join(f"{r['stages_s'].get(k) or 0:.0f}" for k in runs[0]["stages_s"])
        lines.append(f"| seed {r['config'].get('seed')} | {wall} | {rss} | {secs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished run directories")
    p.add_argument("--name", default="trace-run-scorer", help="output file stem (default: trace-run-scorer)")
    p.add_argument("--command", default="trace run", help="the command that made the runs, for the record")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    p.add_argument(
        "--commit",
        default="",
        help="the commit(s) the runs were made at, when not this checkout's (e.g. runs from a worktree)",
    )
    a = p.parse_args(argv)
    runs = [load_run(d) for d in a.runs]
    commit, machine = a.commit or git_commit(), machine_info()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(
        json.dumps({"command": a.command, "commit": commit, "machine": machine, "runs": runs}, indent=2) + "\n",
        encoding="utf-8",
    )
    text = markdown(runs, a.command, commit, machine)
    for r in runs:
        text += f"\n## Run `{r['dir']}` (seed {r['config'].get('seed')})\n\n"
        text += (Path(r["dir"]) / "report.md").read_text(encoding="utf-8").split("\n", 1)[1]
    (out / f"{a.name}.md").write_text(text, encoding="utf-8")
    print(markdown(runs, a.command, commit, machine), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
