"""``trace``: the TRACE pipeline from the command line.

  trace bootstrap [--out DIR] [--demos N] ...   build and fine-tune the base agent
  trace evaluate --model M --env ID ...           success with a 95% CI, returns, annotations
  trace collect --model M --env ID --episodes N   trajectories for analysis (JSONL, resumable)
  trace analyze TRAJECTORIES.jsonl --out R.json   which capabilities the agent lacks
  trace synthesize R.json --model M --out DIR     one calibrated training env per selected capability
  trace train --model M --env-ids ID --out DIR    one GRPO LoRA adapter (resumable with --resume)
  trace run [--quick] [--model M] [--name N]      the whole loop and the baselines, with a report

Every subcommand's flags come with help text: ``trace SUBCOMMAND --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trace_envs.cli import count, natural  # argparse types for counts and seeds, shared with trace-envs

PROG = "trace"
STDOUT = "-"  # an --out that means standard output


def parse_rates(text: str) -> dict[str, float]:
    """``cap=0.5,other=0.2`` -> a dict; clear errors for malformed pairs."""
    out: dict[str, float] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected capability=rate, got {pair!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"rate of {key!r} must be a number, got {value!r}") from None
    return out


def dataclass_flags(cls: type) -> list[tuple[str, type, Any, str]]:
    """``(name, type, default, help)`` of each flag a config dataclass has: one per field, except a
    field holding a nested config, whose metadata ``flags`` maps each of its flags to ``(nested
    field, help)`` (:class:`trace_agents.run.RunConfig`); its default is the default nested config's."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        mapping = f.metadata.get("flags")
        if mapping is None:
            out.append((f.name, hints[f.name], default, f.metadata.get("help", "")))
            continue
        nested = typing.get_type_hints(type(default))
        out += [(flag, nested[attr], getattr(default, attr), help_text) for flag, (attr, help_text) in mapping.items()]
    return out


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field (:func:`dataclass_flags`), with the field's help text and default.

    The default is appended as ``(default: X)`` unless it is empty (None, "") or the help
    text already says it in words."""
    for name, kind, default, help_text in dataclass_flags(cls):
        flag = "--" + name.replace("_", "-")
        plain_help = help_text
        if default not in (None, "") and "default" not in help_text:
            help_text += f" (default: {default})"
        origin = typing.get_origin(kind)
        if origin is dict:
            parser.add_argument(flag, type=parse_rates, default=default, help=help_text, metavar="K=V,...")
        elif origin is list:
            parser.add_argument(flag, nargs="+", default=default, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action="store_true", default=default, help=plain_help)
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=default, help=help_text)
        else:  # Optional[str] and friends
            parser.add_argument(flag, type=str, default=default, help=help_text)


def _config(cls: type, args: argparse.Namespace) -> Any:
    values = {name: getattr(args, name) for name, *_ in dataclass_flags(cls)}
    return cls.from_flags(**values) if hasattr(cls, "from_flags") else cls(**values)


def bootstrap_configs() -> dict[str, type]:
    """The config class of each agent kind's ``trace bootstrap``."""
    from trace_agents.bootstrap import BootstrapConfig
    from trace_agents.scorer.bootstrap import ScorerBootstrapConfig

    return {"scorer": ScorerBootstrapConfig, "lm": BootstrapConfig}


def add_bootstrap_args(parser: argparse.ArgumentParser) -> None:
    """``--agent`` and the union of both kinds' flags; each flag's help names its kinds and their defaults."""
    parser.add_argument(
        "--agent",
        choices=["scorer", "lm"],
        default=None,
        help="agent kind: scorer (clones the oracle into a network that chooses among admissible "
        "actions) or lm (fine-tunes a causal LM: the tiny preset or --model) (default: lm when "
        "an lm-only flag such as --model is given, else scorer)",
    )
    per_kind = {
        kind: {name: (t, d, h) for name, t, d, h in dataclass_flags(cls)} for kind, cls in bootstrap_configs().items()
    }
    names = list(dict.fromkeys([*per_kind["scorer"], *per_kind["lm"]]))
    for name in names:
        kinds = [k for k in ("scorer", "lm") if name in per_kind[k]]
        kind_type, _, help_text = per_kind[kinds[0]][name]
        defaults = {k: per_kind[k][name][1] for k in kinds}
        shown = [f"{k} {d}" for k, d in defaults.items() if d not in (None, "")]
        if len(kinds) == 1:
            help_text += f" ({kinds[0]} only" + (f"; default: {defaults[kinds[0]]})" if shown else ")")
        elif len(set(map(str, defaults.values()))) == 1:
            help_text += f" (default: {defaults[kinds[0]]})" if shown else ""
        else:
            help_text += " (default: " + ", ".join(shown) + ")"
        flag = "--" + name.replace("_", "-")
        origin = typing.get_origin(kind_type)
        if origin is dict:
            parser.add_argument(flag, type=parse_rates, default=argparse.SUPPRESS, help=help_text, metavar="K=V,...")
        elif origin is list:
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, help=help_text)
        elif kind_type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif kind_type in (int, float, str):
            parser.add_argument(flag, type=kind_type, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS, help=help_text)


def bootstrap_config(args: argparse.Namespace) -> Any:
    """The config of ``--agent``'s kind from the flags given; a flag of the other kind is an error.
    Without ``--agent``, an lm-only flag (``--model``, ``--preset``...) picks ``lm``."""
    given = {k: v for k, v in vars(args).items() if k not in ("agent", "func", "command")}
    if args.agent is None:
        scorer_fields = {f.name for f in dataclasses.fields(bootstrap_configs()["scorer"])}
        args.agent = "lm" if any(k not in scorer_fields for k in given) else "scorer"
    cls = bootstrap_configs()[args.agent]
    mine = {f.name for f in dataclasses.fields(cls)}
    foreign = sorted(k for k in given if k not in mine)
    if foreign:
        other = "lm" if args.agent == "scorer" else "scorer"
        raise ValueError(f"--{foreign[0].replace('_', '-')} applies to --agent {other}, not {args.agent}")
    return cls(**given)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    config = bootstrap_config(args)
    if args.agent == "scorer":
        from trace_agents.scorer.bootstrap import run
    else:
        from trace_agents.bootstrap import run

    report = run(config)
    print(
        f"[bootstrap] saved the base agent to {report['model_dir']} "
        f"({report['timings_s']['total']:.0f} s); report: {args.out}/report.md"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from trace_agents.run import RunConfig, run

    config = _config(RunConfig, args)
    results = run(config)
    for name, r in results["methods"].items():
        print(
            f"{name:>15}: success {r['success']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], "
            f"{r['rollouts_used']} rollouts"
        )
    print(f"[run] report: {config.dir / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from trace_agents.training import GRPOConfig, train_adapter

    summary = train_adapter(_config(GRPOConfig, args), args.model, resume=args.resume)
    print(f"[train] {summary['steps']} steps, {summary['rollouts_used']} rollouts; adapter: {summary['adapter']}")
    return 0


def _policy(args: argparse.Namespace, seed_offset: int = 0):
    """The policy the flags name: ``--model oracle`` / ``--policy oracle``, a model served at
    ``--endpoint``, or an HF model loaded here (with ``--adapter``)."""
    seed = args.seed + seed_offset
    oracle = args.model == "oracle" or getattr(args, "policy", None) == "oracle"
    if oracle and args.endpoint:
        raise ValueError("--endpoint serves a model; the oracle runs here (drop one of them)")
    if oracle:
        from trace_agents.rollout import OracleBatch

        return OracleBatch(deficits=args.deficits, seed=seed)
    fmt = {"obs_format": args.obs_format} if args.obs_format else {}
    adapter = getattr(args, "adapter", None)
    if args.endpoint:
        from trace_agents.endpoint import EndpointPolicy

        policy = EndpointPolicy(
            args.endpoint,
            args.model,
            temperature=args.temperature,
            seed=seed,
            adapter_prefix=f"trace-cli-{os.getpid()}:",
            **fmt,
        )
        if adapter and (Path(adapter) / "adapter_config.json").exists():  # a local adapter: load it there
            policy.load_adapter(adapter, adapter)
        return policy  # otherwise --adapter names an adapter the server already serves
    adapters = {adapter: adapter} if adapter else None
    from trace_agents.scorer.agent import ScorerPolicy, is_scorer

    if is_scorer(args.model):
        if fmt:
            raise ValueError(
                "--obs-format sets how a language model reads the conversation; a scorer reads "
                "features (drop --obs-format)"
            )
        return ScorerPolicy.from_pretrained(args.model, adapters=adapters, temperature=args.temperature, seed=seed)
    from trace_agents.policy import HFPolicy

    return HFPolicy.from_pretrained(args.model, adapters=adapters, temperature=args.temperature, seed=seed, **fmt)


def add_serving_args(parser: argparse.ArgumentParser, adapter: bool = False) -> None:
    """``--endpoint`` and ``--obs-format``: where the model generates, and what it reads.
    ``adapter``: whether the subcommand has ``--adapter`` (named in the help)."""
    parser.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="generate on this OpenAI-compatible server instead of loading the model here, e.g. "
        "vLLM at http://localhost:8000/v1; --model is then the served model's name"
        + (" (and --adapter a served LoRA adapter's name)" if adapter else ""),
    )
    parser.add_argument(
        "--obs-format",
        choices=["compact", "chat"],
        default=None,
        help="how the agent sees the conversation: compact (tiny models) or chat (tools in "
        "the request); default: compact here, chat on an --endpoint",
    )


def _check_policy_choice(args: argparse.Namespace) -> None:
    """Exactly one of ``--model`` and ``--policy oracle``; ``--deficits`` only with the oracle."""
    if (args.policy == "oracle") == bool(args.model):
        raise ValueError("give either --model M or --policy oracle")
    if args.deficits and args.policy != "oracle":
        raise ValueError("--deficits goes with --policy oracle")


def add_policy_args(parser: argparse.ArgumentParser, model_help: str) -> None:
    """``--model``/``--policy oracle``/``--deficits`` and the sampling flags, shared by collect and synthesize."""
    parser.add_argument("--model", default=None, help=model_help)
    parser.add_argument(
        "--policy", choices=["oracle"], default=None, help="use OraclePolicy instead of a model (ground-truth checks)"
    )
    parser.add_argument(
        "--deficits",
        type=parse_rates,
        default={},
        metavar="K=V,...",
        help="with --policy oracle: capability=rate mistakes to inject",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling / oracle seed (default: 0)")
    add_serving_args(parser)


def _data_dir_kwargs(env_ids: Sequence[str], data_dir: str | None) -> dict[str, dict[str, Any]]:
    """``{env_id: {"data_dir": data_dir}}`` for the envs whose task family reads a data
    directory (the τ²-bench env); ``{}`` for the others. An unused ``--data-dir`` is an error."""
    if not data_dir:
        return {}
    from trace_envs.registration import spec_of
    from trace_envs.tasks import get_family

    out = {}
    for env_id in env_ids:
        if "data_dir" in get_family(spec_of(env_id).family).defaults:
            out[env_id] = {"data_dir": data_dir}
    if not out:
        raise ValueError(f"--data-dir: none of {list(env_ids)} reads a data directory (trace/tau2-retail-v0 does)")
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trace_agents import evaluate as ev

    kwargs = _data_dir_kwargs(args.env, args.data_dir)
    policy = _policy(args)
    try:
        summaries = [
            ev.evaluate(
                policy,
                env_id,
                args.episodes,
                args.seed_start,
                adapter=args.adapter,
                batch_size=args.batch_size,
                store=args.trajectories,
                resume=args.trajectories is not None,
                env_kwargs=kwargs.get(env_id),
            )
            for env_id in args.env
        ]
    finally:
        if hasattr(policy, "close"):  # adapters it loaded into a server
            policy.close()
    as_json = args.json or args.out == STDOUT
    notes = sys.stderr if as_json else sys.stdout  # stdout carries only the JSON then
    print(ev.format_table(summaries), end="", file=notes)
    if as_json:
        print(ev.to_json(summaries), end="")
    if args.out != STDOUT:
        print(f"wrote {ev.save(summaries, args.out)}", file=notes)
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from trace_agents.rollout import rollout

    _check_policy_choice(args)
    to_stdout = args.out == STDOUT
    if to_stdout and args.resume:
        raise ValueError("--resume skips the episodes stored in a file; it does not go with --out -")
    kwargs = _data_dir_kwargs([args.env], args.data_dir).get(args.env)
    policy = _policy(args)
    seeds = range(args.seed_start, args.seed_start + args.episodes)
    result = rollout(
        policy,
        args.env,
        seeds,
        batch_size=args.batch_size,
        store=None if to_stdout else args.out,
        resume=args.resume,
        env_kwargs=kwargs,
    )
    if to_stdout:
        for record in result.records:
            print(json.dumps(record))
    wins = sum(bool(r["success"]) for r in result.records)
    print(
        f"[collect] {result.n_episodes} episodes of {args.env} in {'stdout' if to_stdout else args.out} "
        f"({wins} successful; {result.skipped} already stored)",
        file=sys.stderr if to_stdout else sys.stdout,
    )
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from trace_agents import analysis
    from trace_agents.trajectories import TrajectoryStore

    records = analysis.one_policy(TrajectoryStore(args.trajectories).records(), args.policy, source=args.trajectories)
    thresholds = analysis.ThresholdsConfig(rho=args.rho, delta=args.delta, s=args.s, R=args.resamples, seed=args.seed)
    if args.judge_url:
        from trace_agents.judge import JudgeLabeler, OpenAIChat

        temperature = args.judge_temperature
        if temperature is None:  # K greedy runs would repeat one answer: sample when there are several
            temperature = 0.7 if args.judge_runs > 1 else 0.0
        judge = JudgeLabeler(
            OpenAIChat(args.judge_url, model=args.judge_model, temperature=temperature), runs=args.judge_runs
        )
        capabilities = judge.discover(records, n=args.discover)
        print(f"[analyze] the judge proposed: {', '.join(capabilities)}")
        report = analysis.analyze(
            records, labeler=judge, capabilities=list(capabilities), thresholds=thresholds, progress=True
        )
        report["capability_descriptions"] = capabilities
    else:
        report = analysis.analyze(records, thresholds=thresholds)
    report["trajectories"] = str(args.trajectories)
    notes = sys.stderr if args.out == STDOUT else sys.stdout  # stdout carries only the JSON then
    print(analysis.format_table(report), end="", file=notes)
    print(f"selected: {', '.join(report['selected']) or 'none'}", file=notes)
    if args.out == STDOUT:
        print(json.dumps(report, indent=2))
    else:
        paths = analysis.write_report(report, args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from trace_agents import synthesis as sy

    _check_policy_choice(args)
    report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    if not isinstance(report, dict) or not isinstance(report.get("selected"), list):
        raise ValueError(f"{args.report} is not a report of trace analyze (an object with a list 'selected')")
    target = args.target or (report.get("env_ids") or [None])[0]
    if not target:
        raise ValueError("the report names no target env; pass --target ID")
    if args.policy == "oracle":  # its mistakes are fixed per episode seed: a new seed for each of the K rollouts
        player = lambda k: _policy(args, seed_offset=k)  # noqa: E731
    else:
        player = _policy(args)
    config = sy.CalibrationConfig(seeds=args.seeds, rollouts=args.rollouts, max_probes=args.max_probes)
    results = sy.synthesize(report, target, args.out, probe=sy.rollout_probe(player, progress=True), config=config)
    for r in results:
        c = r["calibration"]
        print(
            f"{r['id']}: {c['status']} at difficulty {c['difficulty']:.3f}, mean reward {c['mean_reward']:.3f}, "
            f"{c['rollouts_used']} rollouts -> {r['path']}"
        )
    if not results:
        print("the report selects no capability: nothing to synthesize")
    print(f"use them with: export TRACE_ENV_SPECS={args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    description, epilog = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(
        prog=PROG, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "bootstrap",
        help="build and train the base agent with known deficits",
        description="Demonstrations from OraclePolicy with a deficit profile, then either "
        "behaviour cloning of a scorer (--agent scorer, the default) or SFT of the tiny "
        "preset or --model (--agent lm), evaluation on held-out seeds. Writes OUT/model "
        "and OUT/report.md.",
    )
    add_bootstrap_args(p)
    p.set_defaults(func=cmd_bootstrap)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a model (or the oracle) on envs",
        description="Success with a 95% Wilson interval, mean return, component means and "
        "per-capability mistake rates; prints a table and writes JSON.",
    )
    p.add_argument("--model", required=True, help="HF model directory or id, or 'oracle'")
    p.add_argument(
        "--adapter",
        default=None,
        help="a PEFT LoRA adapter directory to apply (with --endpoint it is loaded into the server; "
        "a name that is not a directory is an adapter the server already serves)",
    )
    p.add_argument("--env", nargs="+", default=["trace/retail-v0"], help="env ids (default: trace/retail-v0)")
    p.add_argument("--episodes", type=count, default=100, help="episodes per env (default: 100)")
    p.add_argument(
        "--seed-start",
        type=natural,
        default=1_000_000,
        help="first seed; keep it disjoint from training seeds (default: 1000000)",
    )
    p.add_argument("--batch-size", type=count, default=16, help="envs generated for at once (default: 16)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument(
        "--deficits",
        type=parse_rates,
        default={},
        metavar="K=V,...",
        help="with --model oracle: capability=rate mistakes to inject",
    )
    p.add_argument(
        "--trajectories",
        default=None,
        help="also store the episodes in this JSONL file (episodes already there are reused)",
    )
    p.add_argument(
        "--out",
        default="runs/evaluate.json",
        help="where to write the JSON summary ('-': print it instead, the table going to stderr)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the JSON summary instead of the table (which goes to stderr); --out is still written",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="τ²-bench data directory for trace/tau2-retail-v0 (default: $TAU2_DATA_DIR)",
    )
    add_serving_args(p, adapter=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "collect",
        help="roll out a model (or the oracle) and store trajectories",
        description="Episodes of one env stored as JSONL, one per line; --resume skips the episodes already stored.",
    )
    add_policy_args(p, "HF model directory or id to collect with")
    p.add_argument("--env", default="trace/retail-v0", help="target env id (default: trace/retail-v0)")
    p.add_argument("--episodes", type=count, default=300, help="episodes to collect (default: 300)")
    p.add_argument("--seed-start", type=natural, default=0, help="first seed (default: 0)")
    p.add_argument("--batch-size", type=count, default=16, help="envs generated for at once (default: 16)")
    p.add_argument(
        "--out",
        default="runs/trajectories.jsonl",
        help="JSONL file to append to ('-': print the episodes as JSON lines instead)",
    )
    p.add_argument("--resume", action="store_true", help="skip episodes already in --out")
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="τ²-bench data directory for trace/tau2-retail-v0 (default: $TAU2_DATA_DIR)",
    )
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "analyze",
        help="select the capabilities an agent lacks from its trajectories",
        description="Rule-based labels from the env annotations, ER+/ER-/coverage per "
        "capability, bootstrap-resampled selection. Writes JSON, markdown and PNG.",
    )
    p.add_argument("trajectories", help="a JSONL file written by trace collect")
    p.add_argument(
        "--out",
        default="runs/analysis.json",
        help="report JSON (markdown and PNG go beside it; '-': print the JSON instead, the table going to stderr)",
    )
    p.add_argument(
        "--policy",
        default=None,
        metavar="ID",
        help="analyze only this policy's episodes, for a file that holds several (the ID ends each "
        "record's key; a unique prefix will do)",
    )
    p.add_argument("--rho", type=float, default=0.10, help="minimum coverage of failures (default: 0.10)")
    p.add_argument("--delta", type=float, default=0.20, help="minimum ER- minus ER+ (default: 0.20)")
    p.add_argument("--s", type=int, default=8, help="resamples that must select it (default: 8)")
    p.add_argument("--resamples", type=int, default=10, help="bootstrap resamples R (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="resampling seed (default: 0)")
    p.add_argument(
        "--judge-url",
        default=None,
        help="label with an LLM judge at this OpenAI-compatible base URL (e.g. http://host:8000/v1) "
        "instead of the env annotations",
    )
    p.add_argument("--judge-model", default="default", help="the judge's model name at --judge-url")
    p.add_argument("--judge-runs", type=int, default=3, help="K independent labelling runs (default: 3)")
    p.add_argument(
        "--judge-temperature",
        type=float,
        default=None,
        help="the judge's sampling temperature (default: 0.7 with several runs, so that they are "
        "independent; 0 with one)",
    )
    p.add_argument("--discover", type=int, default=6, help="capabilities the judge may propose (default: 6)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "synthesize",
        help="write a calibrated training env per selected capability",
        description="Derives a spec per selected capability from the target (same domain and "
        "tools), bisects its difficulty until the base policy's mean reward is in "
        "[0.2, 0.6] with few all-success or all-failure groups, and saves it.",
    )
    p.add_argument("report", help="the JSON written by trace analyze")
    add_policy_args(p, "the base model (HF directory or id) to calibrate against")
    p.add_argument("--target", default=None, help="target env id (default: the report's)")
    p.add_argument("--out", default="runs/specs", help="directory for the spec files (default: runs/specs)")
    p.add_argument("--seeds", type=int, default=8, help="B: seeds per calibration probe (default: 8)")
    p.add_argument("--rollouts", type=int, default=4, help="K: rollouts per seed (default: 4)")
    p.add_argument("--max-probes", type=int, default=6, help="bisection steps at most (default: 6)")
    p.set_defaults(func=cmd_synthesize)

    from trace_agents.training import GRPOConfig

    p = sub.add_parser(
        "train",
        help="train one LoRA adapter with GRPO on envs",
        description="GRPO (TRL's GRPOTrainer) on multi-turn episodes: K rollouts per task, "
        "group-normalized returns, env tokens masked out of the loss. Writes the "
        "adapter, checkpoints and log.jsonl under --out.",
    )
    p.add_argument("--model", required=True, help="the base model: HF directory or id")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_dataclass_args(p, GRPOConfig)
    p.set_defaults(func=cmd_train)

    from trace_agents.run import RunConfig

    p = sub.add_parser(
        "run",
        help="the whole TRACE loop and its baselines at equal rollout budget",
        description="Bootstrap (or --model), collect, analyze, synthesize, train one adapter per "
        "capability, route, run the baselines (GRPO on the target, one adapter on "
        "all synthetic envs, GEPA) and evaluate on held-out seeds. Writes "
        "<runs-dir>/<name>/report.md and results.json; rerun to resume.",
    )
    add_dataclass_args(p, RunConfig)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    from trace_agents.endpoint import EndpointError  # standard library only: cheap to import

    try:
        return args.func(args)
    except (ValueError, KeyError, OSError, ImportError, EndpointError) as exc:
        # The τ²-bench data error words its fix for a command line (--data-dir, not data_dir=).
        print(f"{PROG}: error: {exc.for_cli() if hasattr(exc, 'for_cli') else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
