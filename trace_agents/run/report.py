"""The report of a run: ``results.json``, ``report.md`` with its findings, and the PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trace_agents.run.workdir import Run


def write_report(run: Run, stages: Mapping[str, Any]) -> dict[str, Any]:
    c = run.config
    evaluation = stages["evaluate"]
    results = {
        "agent": c.agent,
        "methods": evaluation["methods"],
        "heldout_seeds": evaluation["heldout_seeds"],
        "target": c.target,
        "budget": stages["budget"],
        "curve": evaluation["curve"],
        "adapters": evaluation.get("adapters", {}),
    }
    if "tau2" in evaluation:
        results["tau2"] = evaluation["tau2"]
    plots = {
        "success": plot_success(evaluation["methods"], run.dir / "success.png"),
        "curve": plot_curve(evaluation["curve"], run.dir / "budget_curve.png"),
        "routing": plot_confusion(stages["route"]["accuracy"]["confusion"], run.dir / "routing_confusion.png"),
    }
    results["analysis_vs_deficits"] = analysis_vs_deficits(run, stages)
    analysis_png = stages["analyze"]["paths"].get("png")
    (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (run.dir / "report.md").write_text(format_report(run, stages, results, plots, analysis_png), encoding="utf-8")
    return results


def analysis_vs_deficits(run: Run, stages: Mapping[str, Any]) -> dict[str, Any] | None:
    """Precision and recall of the analysis' selection against the deficits the bootstrap injected
    (a capability counts as injected when its rate is > 0); None when the run did not bootstrap."""
    report = run.dir / "bootstrap" / "report.json"
    if not stages.get("base", {}).get("bootstrapped") or not report.exists():
        return None
    deficits = json.loads(report.read_text(encoding="utf-8"))["config"]["deficits"]
    injected = {cap for cap, rate in deficits.items() if rate > 0}
    selected = set(stages["analyze"]["by_analysis"])
    hits = selected & injected
    return {
        "injected": sorted(injected),
        "selected": sorted(selected),
        "precision": len(hits) / len(selected) if selected else None,
        "recall": len(hits) / len(injected) if injected else None,
    }


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_success(methods: Mapping[str, Mapping[str, Any]], path: Path) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    names = list(methods)
    y = [methods[m]["success"] for m in names]
    lo = [y[i] - methods[m]["ci95"][0] for i, m in enumerate(names)]
    hi = [methods[m]["ci95"][1] - y[i] for i, m in enumerate(names)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, y, yerr=[lo, hi], capsize=4, color=["#888888", "#d62728", "#1f77b4", "#9467bd", "#2ca02c"][: len(y)])
    ax.set_ylabel("held-out success (95% CI)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_curve(curve: Mapping[str, Sequence[Sequence[float]]], path: Path) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    fig, (ax, ax_ret) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, points in curve.items():
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        with_return = [p for p in pts if len(p) > 2]
        ax_ret.plot([p[0] for p in with_return], [p[2] for p in with_return], marker="o", label=name)
    ax.set_xlabel("env rollouts used")
    ax.set_ylabel("held-out success")
    ax.set_ylim(-0.03, 1)
    ax_ret.set_xlabel("env rollouts used")
    ax_ret.set_ylabel("held-out mean return")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_confusion(confusion: Mapping[str, Mapping[str, int]], path: Path) -> str | None:
    plt = _plt()
    if plt is None or not confusion:
        return None
    rows = list(confusion)
    cols = sorted(
        {k for r in confusion.values() for k in r}, key=lambda k: (k not in rows, rows.index(k) if k in rows else 0, k)
    )
    data = [[confusion[r].get(k, 0) for k in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), 1.2 + 0.6 * len(rows)))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(cols)), [k.replace("_", "\n") for k in cols], fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel("routed to")
    ax.set_ylabel("true env")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _signed(diff: Mapping[str, Any]) -> str:
    """``+0.053 [+0.027, +0.079]`` from a :func:`~trace_agents.stats.paired_difference`."""
    ci = diff.get("ci95")
    return f"{diff['mean']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _copy_note(probe: Mapping[str, Any] | None) -> str:
    """What the bootstrap's copy probe says about a base agent that never succeeds ('' without one)."""
    if not probe or probe.get("continuation_accuracy") is None:
        return ""
    return (
        f" Its copy probe (bootstrap report) gets {probe['continuation_accuracy']:.3f} of the digits after an "
        "id's first right, where chance is about 0.1: an agent that cannot copy the ids its tool calls need "
        "cannot succeed."
    )


def findings(results: Mapping[str, Any], stages: Mapping[str, Any]) -> list[str]:
    """Plain statements of what the numbers show (no tuning happens on these seeds)."""
    m = results["methods"]
    out = []
    t, b = m["trace"], m["base"]
    verdict = "above" if t["success"] > b["success"] else ("equal to" if t["success"] == b["success"] else "below")
    sig = "the 95% CIs overlap" if _overlap(t["ci95"], b["ci95"]) else "the 95% CIs do not overlap"
    out.append(
        f"TRACE is {verdict} the base agent on held-out seeds ({t['success']:.3f} vs {b['success']:.3f}; {sig})."
    )
    for other in [k for k in ("grpo_target", "single_adapter", "gepa") if k in m]:
        o = m[other]
        rel = "above" if t["success"] > o["success"] else ("equal to" if t["success"] == o["success"] else "below")
        out.append(
            f"TRACE is {rel} {other} ({t['success']:.3f} vs {o['success']:.3f} at "
            f"{t['rollouts_used']} vs {o['rollouts_used']} rollouts; "
            f"{'CIs overlap' if _overlap(t['ci95'], o['ci95']) else 'CIs do not overlap'})."
        )
    returns = ", ".join(f"{k} {v['mean_return']:.3f}" for k, v in m.items())
    out.append(f"Mean return (the dense signal GRPO optimizes): {returns}.")
    paired = [f"{k} {_signed(v['return_vs_base'])}" for k, v in m.items() if v.get("return_vs_base")]
    if paired:
        out.append("Mean return minus the base agent's, paired on the same seeds (95% CI): " + ", ".join(paired) + ".")
    analyze = stages["analyze"]
    if analyze.get("forced"):
        out.append(
            f"No capability (or too few) passed selection; trained the next ranked by gap x coverage "
            f"instead: {', '.join(analyze['forced'])}."
        )
    if stages.get("collect", {}).get("success") == 0:
        out.append(
            "No collected episode succeeded, so analysis had no success to contrast with: capabilities "
            "were selected on ER- (their share of failures) alone."
        )
    for cap, cal in (stages["synthesize"].get("calibration") or {}).items():
        if cal and cal.get("status") != "in_band":
            out.append(
                f"Calibration of {cap} ended {cal.get('status')}: its env is outside the reward band, so "
                f"GRPO groups there carry less signal."
            )
    acc = stages["route"]["accuracy"]["accuracy"]
    out.append(f"Routing accuracy on held-out synthetic openings: {acc:.2f}.")
    for cap, e in (results.get("adapters") or {}).items():
        before, after = e["env_base"]["mistake_rate"], e["env_adapter"]["mistake_rate"]
        t0, t1 = e["target_base"]["mistake_rate"], e["target_adapter"]["mistake_rate"]
        out.append(
            f"The {cap} adapter {'lowers' if after < before else 'does not lower'} its mistake rate on its "
            f"own env ({before:.3f} -> {after:.3f}) and {'lowers' if t1 < t0 else 'does not lower'} it on the "
            f"target ({t0:.3f} -> {t1:.3f})."
        )
    if b["success"] == 0 and t["success"] == 0:
        out.append(
            "The base agent never succeeds on the target, so success cannot separate the methods; compare "
            "mean returns." + _copy_note(stages.get("base", {}).get("copy_probe"))
        )
    return out


def format_report(
    run: Run, stages: Mapping[str, Any], results: Mapping[str, Any], plots: Mapping[str, Any], analysis_png: str | None
) -> str:
    c = run.config
    m = results["methods"]
    lines = [
        f"# TRACE run `{c.name}`",
        "",
        f"Target `{c.target}`; held-out seeds {results['heldout_seeds'][0]}–{results['heldout_seeds'][1]} "
        f"({c.eval_episodes} episodes per method); base model `{stages['base']['model']}`"
        + f"; agent kind `{c.agent}`"
        + (" (quick CI configuration)" if c.quick else "")
        + ".",
        "",
        "## Success by method",
        "",
        "| method | success | 95% CI | mean return | vs base (paired, 95% CI) | well-formed | episodes "
        "| rollouts used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in m.items():
        vs = _signed(r["return_vs_base"]) if r.get("return_vs_base") else "–"
        lines.append(
            f"| {name} | {r['success']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
            f"{r['mean_return']:.3f} | {vs} | {r['well_formed_rate']:.3f} | {r['episodes']} | "
            f"{r['rollouts_used']} |"
        )
    if plots.get("success"):
        lines += ["", f"![success by method]({plots['success']})"]
    lines += ["", "## Findings", ""] + [f"- {f}" for f in findings(results, stages)]
    budget = stages["budget"]
    lines += [
        "",
        "## Rollout budget",
        "",
        f"TRACE used {budget['trace']} episodes: {budget['collect']} for analysis, {budget['calibration']} for "
        f"calibration and {budget['training']} for GRPO. Each baseline was given {budget['trace']}.",
    ]
    if plots.get("curve"):
        lines += ["", f"![rollout-budget curve]({plots['curve']})"]
    an = stages["analyze"]
    lines += [
        "",
        "## Analysis",
        "",
        f"Selected by analysis: {', '.join(an['by_analysis']) or 'none'}; trained: {', '.join(an['selected'])}.",
    ]
    versus = results.get("analysis_vs_deficits")
    if versus:
        lines += [
            "",
            f"Against the deficits the bootstrap injected ({', '.join(versus['injected']) or 'none'}): "
            f"precision {_fmt(versus['precision'])}, recall {_fmt(versus['recall'])}.",
        ]
    if analysis_png:
        lines += ["", f"![ER+ and ER- per capability]({Path(analysis_png).name})"]
    lines += ["", "## Synthetic envs", "", "| capability | env | calibration | mean reward |", "|---|---|---|---|"]
    for cap, env_id in stages["synthesize"]["envs"].items():
        cal = stages["synthesize"]["calibration"].get(cap) or {}
        lines.append(f"| {cap} | `{env_id}` | {cal.get('status', '-')} | {_fmt(cal.get('mean_reward'))} |")
    route = stages["route"]
    lines += [
        "",
        "## Routing",
        "",
        f"Router: {route['router']}"
        + (f" ({route['embedder']})" if route.get("embedder") else "")
        + f"; accuracy on held-out synthetic openings {route['accuracy']['accuracy']:.2f} "
        f"(n = {route['accuracy']['n']}).",
    ]
    if c.agent == "scorer":
        lines += [
            "",
            "Label scoring (`--router label`) asks a generative base model to name the capability; the "
            "scorer has none, so it routes by embedding only.",
        ]
    if plots.get("routing"):
        lines += ["", f"![routing confusion]({plots['routing']})"]
    effects = results.get("adapters") or {}
    if effects:
        lines += [
            "",
            "## Each adapter on its capability",
            "",
            "The capability's mistake rate (95% Wilson CI, episodes that needed it), base agent vs the "
            "capability's adapter, on held-out seeds of its synthetic env and of the target.",
            "",
            "| capability | env | base on env | adapter on env | base on target | adapter on target |",
            "|---|---|---|---|---|---|",
        ]
        for cap, e in effects.items():
            cells = [_rate_cell(e[k]) for k in ("env_base", "env_adapter", "target_base", "target_adapter")]
            lines.append(f"| {cap} | `{e['env']}` | " + " | ".join(cells) + " |")
    gepa = stages["baselines"]["gepa"]
    if "skipped" in gepa:
        lines += ["", "## GEPA", "", f"Not run: {gepa['skipped']}."]
    else:
        lines += [
            "",
            "## GEPA",
            "",
            f"{gepa['candidates']} candidate prompts, best validation score "
            f"{_fmt(gepa.get('best_val_score'))}. Reflection ran on the local model; a tiny model rarely "
            f"proposes a better prompt, so use an OpenAI-compatible endpoint for a real comparison.",
            "",
            "Best prompt:",
            "",
            "```",
            gepa["best_prompt"][:1500],
            "```",
        ]
    if "tau2" in results:
        lines += ["", "## τ²-bench retail", "", "| method | success | 95% CI | episodes |", "|---|---|---|---|"]
        for name, r in results["tau2"].items():
            lines.append(
                f"| {name} | {r['success']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['episodes']} |"
            )
    lines += ["", "## Time", "", "| stage | seconds |", "|---|---|"]
    for name, st in stages.items():
        if isinstance(st, Mapping) and "seconds" in st:
            lines.append(f"| {name} | {st['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _rate_cell(rate: Mapping[str, Any]) -> str:
    ci = rate.get("ci95")
    return f"{rate['mistake_rate']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] (n={rate['episodes']})" if ci else "– (n=0)"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
