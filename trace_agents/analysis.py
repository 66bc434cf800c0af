"""Stage 2 of TRACE: which capabilities does an agent lack on a target env?

Each (trajectory, capability) pair gets a label: ``NA`` when the task did not need the
capability or the agent never exercised it, ``PRESENT`` when it showed, ``LACKING`` when
its typical mistake showed. From the labels, per capability:

- ER+ is the share of *successful* applicable trajectories where it is LACKING;
- ER- is the same share among *failed* ones;
- coverage is the share of all failures where it is LACKING.

A capability is selected when coverage >= rho and ER- - ER+ >= delta in at least ``s``
of ``R`` bootstrap resamples of the trajectories. A deficit that causes failures has a
high ER- and a low ER+. A mistake that is just as common in successes does not explain
failures, so it is not selected.

ER+ is undefined (None) without an applicable success. When the whole sample has none
(an agent that never succeeds), there is nothing to contrast with: the rule falls back
to ER- alone and the report marks the capability ``contrasted: false``. When the sample
has some but a resample draws none, that resample cannot contrast and does not vote.

>>> records = list(TrajectoryStore("runs/x/trajectories.jsonl"))
>>> report = analyze(records)                     # rule-based labels from the env annotations
>>> report["selected"]
['precondition_verification']
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from trace_agents.trajectories import split_key
from trace_envs import CAPABILITIES
from trace_envs.capabilities import BY_NAME as RECORDS


class Label(str, enum.Enum):
    """A capability's label on one trajectory."""

    NA = "NA"
    PRESENT = "PRESENT"
    LACKING = "LACKING"


@runtime_checkable
class Labeler(Protocol):
    """Maps (trajectory, capability) to a label and a short evidence string."""

    def label(self, trajectory: Mapping[str, Any], capability: str) -> tuple[Label, str]: ...


class RuleLabeler:
    """Labels from the env's annotations (``trace_envs.reward.annotate``); every built-in env has them.

    A capability is applicable when the task lists it in ``capabilities`` (τ²-bench tasks
    derive that list from their gold actions) and the agent exercised it (it acted on a
    request, wrote for one, or picked a record), and LACKING when its typical mistake shows.
    The evidence fields and both predicates are the capability's record in
    :mod:`trace_envs.capabilities`. An agent that did nothing has shown no
    precondition checks or precise arguments, so those are NA, not PRESENT.
    """

    def label(self, trajectory: Mapping[str, Any], capability: str) -> tuple[Label, str]:
        if capability not in RECORDS:
            raise ValueError(f"the rule-based labeler knows {sorted(RECORDS)}, not {capability!r}")
        ann = trajectory.get("annotations")
        if not isinstance(ann, Mapping) or "capabilities" not in ann:
            raise ValueError(
                f"trajectory {trajectory.get('task_id', '?')} has no env annotations; "
                "record it with trace_agents.rollout or use an LLM judge"
            )
        if capability not in ann["capabilities"]:
            return Label.NA, "the task does not need it"
        cap = RECORDS[capability]
        evidence = ", ".join(f"{k}={json.dumps(ann.get(k))}" for k in cap.evidence if k in ann)
        if not cap.exercised(ann):
            return Label.NA, f"the agent never exercised it ({evidence})"
        return (Label.LACKING if cap.mistake(ann) else Label.PRESENT), evidence


@dataclass(frozen=True)
class ThresholdsConfig:
    """Selection rule: coverage >= rho and ER- - ER+ >= delta in >= s of R resamples."""

    rho: float = 0.10
    delta: float = 0.20
    s: int = 8
    R: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.rho <= 1 and -1 <= self.delta <= 1):
            raise ValueError(f"need 0 <= rho <= 1 and -1 <= delta <= 1, got rho={self.rho}, delta={self.delta}")
        if not 1 <= self.s <= self.R:
            raise ValueError(f"need 1 <= s <= R, got s={self.s}, R={self.R}")


Thresholds = ThresholdsConfig  # the name before configs were all called *Config


def label_all(
    records: Sequence[Mapping[str, Any]],
    labeler: Labeler | None = None,
    capabilities: Iterable[str] = CAPABILITIES,
    progress: bool = False,
) -> list[dict[str, Label]]:
    """One ``{capability: label}`` per record (a progress bar with ``progress``, for slow judges)."""
    from tqdm.auto import tqdm

    labeler = labeler or RuleLabeler()
    caps = list(capabilities)
    rows = tqdm(records, desc="labelling", unit="traj", disable=None if progress else True)
    return [{c: labeler.label(r, c)[0] for c in caps} for r in rows]


def capability_stats(
    labels: Sequence[Mapping[str, Label]], successes: Sequence[bool], capability: str
) -> dict[str, Any]:
    """ER+, ER-, coverage and the counts behind them, for one capability (ER+ and ER- are
    None without an applicable success or failure)."""
    lack_pos = app_pos = lack_neg = app_neg = 0
    failures = 0
    for lab, ok in zip(labels, successes, strict=True):
        label = lab[capability]  # == rather than "is": a labeller may return plain strings
        failures += not ok
        if label == Label.NA:
            continue
        if ok:
            app_pos += 1
            lack_pos += label == Label.LACKING
        else:
            app_neg += 1
            lack_neg += label == Label.LACKING
    return {
        "er_plus": lack_pos / app_pos if app_pos else None,
        "er_minus": lack_neg / app_neg if app_neg else None,
        "coverage": lack_neg / failures if failures else 0.0,
        "applicable_successes": app_pos,
        "applicable_failures": app_neg,
        "failures": failures,
        "lacking_in_failures": lack_neg,
    }


def _gap(stats: Mapping[str, Any], contrasted: bool) -> float | None:
    """ER- - ER+; ER- alone where the sample has no applicable success (``contrasted`` False);
    None where it cannot be told (no applicable failure, or a resample that lost the contrast)."""
    if stats["er_minus"] is None:
        return None
    if stats["er_plus"] is None:
        return None if contrasted else stats["er_minus"]
    return stats["er_minus"] - stats["er_plus"]


def _passes(stats: Mapping[str, Any], t: ThresholdsConfig, contrasted: bool) -> bool:
    gap = _gap(stats, contrasted)
    return gap is not None and stats["coverage"] >= t.rho and gap >= t.delta


def select(
    labels: Sequence[Mapping[str, Label]],
    successes: Sequence[bool],
    capabilities: Iterable[str],
    thresholds: ThresholdsConfig = ThresholdsConfig(),
) -> dict[str, Any]:
    """The analysis report: per-capability statistics, resample votes and the ranked selection."""
    if len(labels) != len(successes):
        raise ValueError(f"{len(labels)} label rows for {len(successes)} outcomes")
    caps = list(capabilities)
    n = len(labels)
    full = {c: capability_stats(labels, successes, c) for c in caps}
    contrasted = {c: full[c]["applicable_successes"] > 0 for c in caps}
    rng = random.Random(thresholds.seed)
    votes = dict.fromkeys(caps, 0)
    for _ in range(thresholds.R if n else 0):
        idx = [rng.randrange(n) for _ in range(n)]
        lab = [labels[i] for i in idx]
        ok = [successes[i] for i in idx]
        for c in caps:
            votes[c] += _passes(capability_stats(lab, ok, c), thresholds, contrasted[c])
    rows = {
        c: {
            **full[c],
            "gap": _gap(full[c], contrasted[c]),
            "contrasted": contrasted[c],
            "votes": votes[c],
            "selected": votes[c] >= thresholds.s,
        }
        for c in caps
    }
    ranked = sorted(caps, key=lambda c: (-rows[c]["selected"], -(rows[c]["gap"] or 0.0) * rows[c]["coverage"], c))
    return {
        "episodes": n,
        "successes": sum(map(bool, successes)),
        "thresholds": asdict(thresholds),
        "capabilities": {c: rows[c] for c in ranked},
        "selected": [c for c in ranked if rows[c]["selected"]],
    }


def analyze(
    records: Sequence[Mapping[str, Any]],
    labeler: Labeler | None = None,
    capabilities: Iterable[str] = CAPABILITIES,
    thresholds: ThresholdsConfig = ThresholdsConfig(),
    progress: bool = False,
) -> dict[str, Any]:
    """Label every record and select the lacking capabilities (see the module docstring)."""
    if not records:
        raise ValueError("no trajectories to analyze")
    caps = list(capabilities)
    labels = label_all(records, labeler, caps, progress)
    report = select(labels, [bool(r["success"]) for r in records], caps, thresholds)
    report["labeler"] = type(labeler or RuleLabeler()).__name__
    report["env_ids"] = sorted({str(r.get("env_id")) for r in records})
    return report


def policies(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The records grouped by the policy that played them, under its policy key: the last part
    of each record's key (the policy's identity, adapter and env settings; see
    :func:`trace_agents.trajectories.policy_key`)."""
    groups: dict[str, list[Any]] = {}
    for record in records:
        groups.setdefault(split_key(record["key"])[3], []).append(record)
    return groups


def describe_policy(record: Mapping[str, Any]) -> str:
    """The policy that played ``record`` in a few words: its kind, model or deficits, adapter and temperature."""
    identity = record.get("policy") or {}
    parts = [str(identity.get("policy", "unknown")), str(identity.get("model") or "")]
    if identity.get("deficits"):
        parts.append("deficits " + ",".join(f"{k}={v}" for k, v in identity["deficits"].items()))
    if record.get("adapter"):
        parts.append(f"adapter {record['adapter']}")
    if "temperature" in identity:
        parts.append(f"temperature {identity['temperature']}")
    return " ".join(filter(None, parts))


def one_policy(
    records: Iterable[Mapping[str, Any]], policy: str | None = None, source: str = "the trajectories"
) -> list[Any]:
    """The records of one policy: the one whose key starts with ``policy``, or the only one there is.

    Records of several policies are refused without ``policy``: analyzed together, they would
    pool different agents' mistakes into one profile. The error lists the policies found.
    """
    groups = policies(records)
    if policy is None and len(groups) <= 1:
        return [r for group in groups.values() for r in group]
    matches = [key for key in groups if policy and key.startswith(policy)]
    if len(matches) == 1:
        return groups[matches[0]]
    found = "\n".join(f"  {key}  {describe_policy(group[0])} ({len(group)} episodes)" for key, group in groups.items())
    if policy is None:
        raise ValueError(
            f"{source} holds the episodes of {len(groups)} policies; analyze one at a time "
            f"(trace analyze --policy ID):\n{found}"
        )
    raise ValueError(f"policy {policy!r} matches {len(matches)} of the {len(groups)} policies in {source}:\n{found}")


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a markdown table, selected capabilities first."""
    t = report["thresholds"]
    lines = [
        f"{report['episodes']} trajectories, {report['successes']} successful. Selected when coverage >= "
        f"{t['rho']} and ER- - ER+ >= {t['delta']} in >= {t['s']} of {t['R']} resamples.",
        "",
        "| capability | ER+ | ER- | ER- - ER+ | coverage | votes | selected |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]

    def num(x: float | None, sign: str = "") -> str:
        return "n/a" if x is None else f"{x:{sign}.3f}"

    for cap, r in report["capabilities"].items():
        lines.append(
            f"| {cap} | {num(r['er_plus'])} | {num(r['er_minus'])} | {num(r['gap'], '+')} "
            f"| {r['coverage']:.3f} | {r['votes']}/{t['R']} | {'yes' if r['selected'] else 'no'} |"
        )
    alone = [cap for cap, r in report["capabilities"].items() if not r.get("contrasted", True) and r["er_minus"]]
    if alone:
        lines += [
            "",
            f"No successful episode needed {', '.join(alone)}: ER+ is undefined, so the gap there is "
            f"ER- alone (nothing to contrast with).",
        ]
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: str | Path) -> Path | None:
    """A bar chart of ER+ and ER- per capability (PNG); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    caps = list(report["capabilities"])
    xs = range(len(caps))
    fig, ax = plt.subplots(figsize=(1.8 * len(caps) + 2, 3.6))
    rates = {k: [report["capabilities"][c][k] for c in caps] for k in ("er_plus", "er_minus")}
    ax.bar([x - 0.2 for x in xs], [r or 0.0 for r in rates["er_plus"]], 0.4, label="ER+ (successes)")
    ax.bar([x + 0.2 for x in xs], [r or 0.0 for r in rates["er_minus"]], 0.4, label="ER- (failures)")
    for x, r in zip(xs, rates["er_plus"], strict=True):
        if r is None:  # no applicable success: undefined, not zero
            ax.text(x - 0.2, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(
        list(xs), [c.replace("_", "\n") + (" *" if c in report["selected"] else "") for c in caps], fontsize=8
    )
    ax.set_ylabel("share LACKING")
    ax.set_ylim(0, 1)
    ax.set_title("Error rate by outcome (* selected)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """``out`` (JSON), and beside it the markdown table and the PNG chart."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text("# Capability analysis\n\n" + format_table(report))
    paths = {"json": out, "markdown": md}
    png = plot(report, out.with_suffix(".png"))
    if png is not None:
        paths["png"] = png
    return paths
