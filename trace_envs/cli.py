"""The ``trace-envs`` command line: list, show, validate, play, check, replay and benchmark envs.

    trace-envs list                                   # the registry, one id per row (--json)
    trace-envs show trace/precondition-v0 --seed 3    # the spec and one oracle episode
    trace-envs validate env_specs/*.json my-spec.json # schema and meaning checks (none: all)
    trace-envs play trace/retail-v0                   # be the agent, in the terminal
    trace-envs check my-spec.json --episodes 5        # the API-contract checker (none: all)
    trace-envs replay runs/x/trajectories.jsonl       # stored episodes as transcripts
    trace-envs bench --seconds 2                      # throughput table (source checkout)

Also runnable as ``python -m trace_envs.cli``. Exit codes: 0 success, 1 a failed
validation or check, 2 a usage error (unknown id, bad argument).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from trace_envs.actions import say, tool_call
from trace_envs.errors import SpecError, TraceError
from trace_envs.oracle import OraclePolicy
from trace_envs.registration import check_id, register_spec, registered_ids, spec_of
from trace_envs.render import RENDERERS
from trace_envs.spec import load_spec
from trace_envs.tasks import tau2

PROG = "trace-envs"
# Keys of every step's info; whatever else the last info holds is an end-of-episode annotation.
_STEP_KEYS = frozenset(
    {
        "env_id",
        "spec_version",
        "capability",
        "task_id",
        "seed",
        "step",
        "messages",
        "tools",
        "reward_components",
        "parse_error",
        "success",
        "return_components",
        "episode_return",
    }
)
_DESCRIPTION_WIDTH = 60
_OBS_PREVIEW = 3000  # `show` clips the first observation (policy + tool schemas, ~10k chars) unless --full
_BENCH_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_envs.py"

PLAY_HELP = """\
Type one assistant turn per line:
  any text                      a message to the customer
  <tool_call>{...}</tool_call>  a raw tool call (or a bare {"name": ..., "arguments": {...}})
  :tool NAME {json-args}        shorthand for a tool call, e.g. :tool get_order_details {"order_id": "#W0"}
  :say TEXT                     a message, even one that starts with ':'
  :tools                        list the tool names
  :help                         this help
  :quit                         leave (also Ctrl-D)
Blank lines are ignored."""


# ---------------------------------------------------------------------- helpers
def count(text: str, least: int = 1) -> int:
    """An argparse type: an integer >= ``least`` (episodes, batch sizes); ``trace`` uses it too."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {value}")
    return value


def natural(text: str) -> int:
    """An argparse type: an integer >= 0 (seeds, limits)."""
    return count(text, 0)


def _family_params(args: argparse.Namespace) -> dict[str, Any]:
    """Task-family overrides from --param KEY=VALUE (JSON values, else strings) and --data-dir."""
    params: dict[str, Any] = {}
    for item in getattr(args, "param", None) or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    if getattr(args, "data_dir", None):
        params["data_dir"] = args.data_dir
    return params


def _make(env_id: str, fmt: str | None, args: argparse.Namespace | None = None, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a did-you-mean for unknown ids, the observation format and family params."""
    if fmt is not None:
        kwargs["obs_format"] = fmt
    if args is not None:
        kwargs.update(_family_params(args))
    return gym.make(check_id(env_id), **kwargs)


class UsageError(TraceError, ValueError):
    """A bad command-line value (such as a malformed --task-id): reported, exit code 2."""


def _reset(env: gym.Env, seed: int, task_id: str | None) -> tuple[str, dict[str, Any]]:
    """Reset with a seed, or with a task id when one was given."""
    options = {"task_id": task_id} if task_id is not None else None
    try:
        return env.reset(seed=seed, options=options)
    except ValueError as exc:  # e.g. a malformed task id: the user's typo, not a crash
        if isinstance(exc, TraceError):
            raise
        raise UsageError(str(exc)) from exc


def _value(value: Any) -> str:
    """One info value as compact JSON (or repr where JSON cannot say it)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _print_mapping(title: str, mapping: Mapping[str, Any]) -> None:
    print(f"{title}:")
    for key, value in mapping.items():
        print(f"  {key}: {_value(value)}")


def _annotations(info: Mapping[str, Any]) -> dict[str, Any]:
    """The end-of-episode capability annotations: every info key beyond the per-step ones."""
    return {k: v for k, v in info.items() if k not in _STEP_KEYS}


def _print_outcome(info: Mapping[str, Any], total: float) -> None:
    """The final info's success, return, return components and annotations."""
    print(f"success: {info.get('success')}")
    print(f"return: {total:+.4f} (episode_return {_value(info.get('episode_return'))})")
    _print_mapping("return_components", info.get("return_components", {}))
    _print_mapping("annotations", _annotations(info))


def _components(components: Mapping[str, float]) -> str:
    nonzero = [f"{k}={v:+.4f}" for k, v in components.items() if v]
    return ", ".join(nonzero) if nonzero else "all 0"


def _is_spec_path(arg: str) -> bool:
    # Ids contain "/" too, so only a .json suffix or an existing file marks a path.
    return arg.endswith(".json") or Path(arg).is_file()


# ---------------------------------------------------------------------- list
def _listing() -> list[dict[str, Any]]:
    """One entry per registered id: its spec's summary, or the error of a spec that does not load."""
    entries = []
    for env_id in registered_ids():
        try:
            s = spec_of(env_id)
        except SpecError as exc:  # a user spec registered unvalidated: show it, flagged
            entries.append({"id": env_id, "error": str(exc)})
            continue
        entries.append(
            {
                "id": env_id,
                "version": s.version,
                "capability": s.capability,
                "family": s.family,
                "max_turns": s.max_turns,
                "description": " ".join(s.description.split()),
                "source": s.source,
            }
        )
    return entries


def cmd_list(args: argparse.Namespace) -> int:
    """Print a table (or a JSON list) of the registered ids."""
    from trace_envs.registration import SKIPPED

    entries = _listing()
    for path, why in SKIPPED.items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    rows = [("id", "capability", "family", "max_turns", "description")]
    for e in entries:
        if "error" in e:
            row = (e["id"], "?", "?", "?", f"INVALID: {e['error']}")
        else:
            row = (e["id"], e["capability"], e["family"], str(e["max_turns"]), e["description"])
        if len(row[4]) > _DESCRIPTION_WIDTH:
            row = (*row[:4], row[4][: _DESCRIPTION_WIDTH - 1] + "…")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(row[4]))
    print(f"\n{len(rows) - 1} ids")
    return 0


# ---------------------------------------------------------------------- show
def cmd_show(args: argparse.Namespace) -> int:
    """Print the spec JSON and one oracle-played episode as a transcript."""
    spec = spec_of(args.id)
    print(f"== spec {spec.id} ({spec.source}) ==")
    print(json.dumps(spec.to_json(), indent=2, ensure_ascii=False))
    env = _make(args.id, args.format, args, render_mode="ansi")
    try:
        obs, info = _reset(env, args.seed, args.task_id)
        oracle = OraclePolicy(seed=args.seed)
        oracle.reset(env)
        fmt = args.format or spec.obs_format
        print(f"\n== first observation ({fmt} format; task {info['task_id']}, seed {info['seed']}) ==")
        first_obs = obs
        if not args.full and len(obs) > _OBS_PREVIEW:
            obs_shown = obs[:_OBS_PREVIEW] + f"\n[... {len(obs) - _OBS_PREVIEW} more chars; --full prints them]"
        else:
            obs_shown = obs
        print(obs_shown)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
            total += reward
            done = terminated or truncated
        # Rendered on the unwrapped env: through gym.make the passive checker warns that the
        # env declares no render_fps (meaningless for text), which filterwarnings=error turns fatal.
        transcript = env.unwrapped.render() or ""
        policy = env.unwrapped.messages[0]["content"]
        print(f"\n== transcript ({info['step']} turns, {'terminated' if terminated else 'truncated'}) ==")
        # The chat observation above already shows the policy; do not print it twice.
        if policy and policy in first_obs[: _OBS_PREVIEW if not args.full else None]:
            transcript = transcript.replace(f"system: {policy}", f"system: [the policy above, {len(policy)} chars]", 1)
        print(transcript)
        print("\n== result ==")
        _print_outcome(info, total)
    finally:
        env.close()
    return 0


# ---------------------------------------------------------------------- validate
def _registered_sources() -> list[Any]:
    """The spec (a path or a dict) behind every registered id, then the files registration skipped."""
    from trace_envs.registration import SKIPPED

    return [gym.spec(i).kwargs["spec"] for i in registered_ids()] + [Path(p) for p in SKIPPED]


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate spec files (directories: their *.json), or every registered spec; exit 1 if any is invalid."""
    sources: list[Any] = []
    for arg in args.specs:
        p = Path(arg)
        sources.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    if not args.specs:
        sources = _registered_sources()
        print(f"validating every registered spec ({len(sources)})")
    if not sources:
        print("no spec files given or found")
        return 1
    bad = 0
    for src in sources:
        try:
            spec = load_spec(src)
        except SpecError as exc:
            bad += 1
            print(f"FAIL {exc}")
        else:
            print(f"OK   {spec.source} ({spec.id})")
    print(f"\n{len(sources) - bad} valid, {bad} invalid")
    return 1 if bad else 0


# ---------------------------------------------------------------------- play
def _read_line(prompt: str) -> str | None:
    """One line from stdin without its newline, or None at end of input."""
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    if not line:
        return None
    line = line.rstrip("\r\n")
    if not sys.stdin.isatty():  # piped input: echo it, so the output reads as a transcript
        print(line)
    return line


def _play_action(line: str, tool_names: Sequence[str]) -> str | None:
    """The action a typed line stands for, or None after handling a local command (printing why)."""
    if not line.startswith(":"):
        return line
    command, _, rest = line.partition(" ")
    rest = rest.strip()
    if command == ":help":
        print(PLAY_HELP)
    elif command == ":tools":
        print(", ".join(tool_names))
    elif command == ":say":
        return say(rest)
    elif command == ":tool":
        name, _, raw_args = rest.partition(" ")
        if not name:
            print("usage: :tool NAME {json-args}")
            return None
        try:
            arguments = json.loads(raw_args) if raw_args.strip() else {}
        except ValueError as exc:
            print(f"not valid JSON arguments ({exc}); nothing was sent")
            return None
        if not isinstance(arguments, dict):
            print(f"arguments must be a JSON object, got {type(arguments).__name__}; nothing was sent")
            return None
        return tool_call(name, **arguments)
    else:
        print(f"unknown command {command!r}; type :help (or :say {line} to send it as a message)")
    return None


def cmd_play(args: argparse.Namespace) -> int:
    """Play one episode as the agent, one action per stdin line."""
    env = _make(args.id, args.format, args)
    try:
        obs, info = _reset(env, args.seed, args.task_id)
        tool_names = [t["function"]["name"] for t in info["tools"]]
        print(f"== {info['env_id']} task {info['task_id']} (seed {info['seed']}); :help for commands ==")
        print(obs)
        total = 0.0
        while True:
            line = _read_line("> ")
            if line is None:
                print(f"\n(end of input after {info['step']} turns; episode not finished)")
                return 0
            if not line.strip():
                continue
            if line.strip() == ":quit":
                print(f"(quit after {info['step']} turns; episode not finished)")
                return 0
            action = _play_action(line, tool_names)
            if action is None:
                continue
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            print(obs)
            if "parse_error" in info:
                print(f"[parse error: {info['parse_error']}]")
            print(f"[reward {reward:+.4f} | {_components(info['reward_components'])} | return {total:+.4f}]")
            if terminated or truncated:
                print(f"\n== episode over: {'terminated' if terminated else 'truncated'} after {info['step']} turns ==")
                _print_outcome(info, total)
                return 0
    except KeyboardInterrupt:
        print("\n(interrupted)")
        return 130
    finally:
        env.close()


# ---------------------------------------------------------------------- check
def _fallback_check(env: gym.Env, episodes: int, seed: int) -> dict[str, Any]:
    """Without trace_envs.testing: gymnasium's check_env plus oracle episodes that must succeed."""
    from gymnasium.utils.env_checker import check_env

    check_env(env.unwrapped, skip_render_check=True)
    oracle = OraclePolicy()
    returns = []
    for s in range(seed, seed + episodes):
        obs, info = env.reset(seed=s)
        oracle.reset(env)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
            total += reward
            done = terminated or truncated
        if not info.get("success"):  # raised explicitly: an assert would vanish under python -O
            raise AssertionError(f"oracle seed {s} did not succeed: return_components={info.get('return_components')}")
        returns.append(total)
    return {
        "env_id": env.unwrapped.trace_spec.id,
        "episodes": episodes,
        "oracle_returns": returns,
        "checker": "fallback (gymnasium check_env + oracle)",
    }


def _check_one(target: str, args: argparse.Namespace) -> str:
    """Check one id or spec file, printing the outcome; returns "ok", "fail" or "skip"."""
    if _is_spec_path(target):
        try:
            # Absolute, so re-registering a built-in file matches its original registration.
            env_id = register_spec(Path(target).resolve(), override=True)
        except SpecError as exc:
            print(f"FAIL {exc}")
            return "fail"
        print(f"registered {env_id} from {target}")
    else:
        env_id = check_id(target)
    try:
        from trace_envs.testing import check_text_env
    except ImportError:
        check_text_env = _fallback_check
    try:
        kwargs = {"data_dir": args.data_dir} if args.data_dir and "data_dir" in spec_of(env_id).params else {}
        with gym.make(env_id, **kwargs) as env:
            summary = check_text_env(env, episodes=args.episodes, seed=args.seed)
    except tau2.DataError as exc:
        if args.targets:  # named on the command line: missing data fails it
            print(f"FAIL {env_id}: {exc.for_cli()}")
            return "fail"
        print(f"SKIP {env_id}: {exc.for_cli()}")  # checking every id: the data is just not here
        return "skip"
    except Exception as exc:  # a checker reports every failure, including the env's own crashes
        print(f"FAIL {env_id}: {type(exc).__name__}: {exc}")
        return "fail"
    print(f"OK   {env_id}")
    _print_mapping("summary", summary)
    return "ok"


def cmd_check(args: argparse.Namespace) -> int:
    """Run the API-contract checker on ids or spec files (none: every registered id); exit 1 on a failure."""
    targets = args.targets or registered_ids()
    outcomes = [_check_one(target, args) for target in targets]
    if len(targets) > 1:
        print(f"\n{outcomes.count('ok')} passed, {outcomes.count('fail')} failed, {outcomes.count('skip')} skipped")
    return 1 if "fail" in outcomes else 0


# ---------------------------------------------------------------------- tau2-check
def cmd_tau2_check(args: argparse.Namespace) -> int:
    """Play every task of a τ²-bench data directory with the oracle; exit 1 if any fails."""
    from trace_envs.tasks import tau2

    params = {"data_dir": args.data_dir or ""}
    ids = tau2.task_ids(params)[: args.limit or None]
    env = gym.make("trace/tau2-retail-v0", **params)
    oracle = OraclePolicy()
    failed: list[tuple[str, Any]] = []
    for n, task_id in enumerate(ids, 1):
        obs, info = env.reset(options={"task_id": task_id})
        oracle.reset(env)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
            done = terminated or truncated
        if not info["success"]:
            failed.append((task_id, info.get("db_diff")))
        if sys.stderr.isatty() or n == len(ids):
            print(f"\r{n}/{len(ids)} tasks, {len(failed)} failed", end="" if n < len(ids) else "\n", file=sys.stderr)
    env.close()
    print(f"data: {tau2.resolve_data_dir(params.get('data_dir'))}")
    print(f"passed {len(ids) - len(failed)}, failed {len(failed)} (of {len(ids)} tasks)")
    for task_id, diff in failed:
        print(f"  FAIL task {task_id}: db_diff={diff}")
    return 1 if failed else 0


# ---------------------------------------------------------------------- bench
def _load_bench():
    """The benchmark module; it lives beside the package in a source checkout, not in the wheel."""
    if not _BENCH_SCRIPT.is_file():
        raise TraceError(f"`{PROG} bench` needs a source checkout: {_BENCH_SCRIPT} not found")
    name = "trace_envs_bench_envs"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, _BENCH_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def cmd_bench(args: argparse.Namespace) -> int:
    """Run benchmarks/bench_envs.py and print its markdown table; write the results only to --out."""
    bench = _load_bench()
    if args.out is None:  # the committed results stay as they are unless --out names their directory
        with tempfile.TemporaryDirectory() as scratch:
            result = bench.run_benchmark(args.ids, args.seconds, scratch)
        print(bench.markdown(result), end="")
        print(f"\n(not saved; --out DIR writes envs.json and envs.md, e.g. --out {bench.DEFAULT_OUT})")
        return 0
    result = bench.run_benchmark(args.ids, args.seconds, args.out)
    print(bench.markdown(result), end="")
    print(f"\nwrote {Path(args.out) / 'envs.json'} and {Path(args.out) / 'envs.md'}")
    return 0


# ---------------------------------------------------------------------- replay
def _trajectories(path: Path):
    """``(line number, record)`` for each trajectory of a JSONL file; a UsageError names a bad line."""
    if not path.is_file():
        raise UsageError(f"no such trajectory file: {path}")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}: line {number} is not valid JSON ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get("steps"), list):
                raise UsageError(
                    f"{path}: line {number} is not a trajectory (a JSON object with 'steps', as "
                    f"`trace collect` and `trace evaluate --trajectories` write)"
                )
            yield number, record


def _number(value: Any) -> str:
    return f"{value:+.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else _value(value)


def _print_trajectory(index: int, number: int, record: Mapping[str, Any], full: bool) -> None:
    """One stored episode: a header, each turn's observation and action with its reward, and the outcome."""
    ended = "cut by the turn limit" if record.get("truncated") else "ended"
    print(
        f"== episode {index} (line {number}): {record.get('env_id')} task {record.get('task_id')}, seed "
        f"{record.get('seed')}; {len(record['steps'])} turns, {ended} =="
    )
    adapter = f", adapter {record['adapter']}" if record.get("adapter") else ""
    print(f"policy: {_value(record.get('policy'))}{adapter}")
    for turn, step in enumerate(record["steps"], 1):
        obs = str(step.get("obs", ""))
        if not full and len(obs) > _OBS_PREVIEW:  # e.g. the opening: cut its policy and tools, keep the conversation
            head, tail = obs[: _OBS_PREVIEW // 2], obs[-_OBS_PREVIEW // 2 :]
            obs = f"{head}\n[... {len(obs) - len(head) - len(tail)} chars; --full prints them ...]\n{tail}"
        print(f"\n-- turn {turn} --\n{obs}\nassistant: {step.get('action', '')}")
        error = f" | parse error: {step['parse_error']}" if step.get("parse_error") else ""
        print(f"[reward {_number(step.get('reward'))} | {_components(step.get('components') or {})}{error}]")
    print("\n== result ==")
    print(f"success: {record.get('success')}")
    print(f"return: {_number(record.get('return'))}")
    _print_mapping("return_components", record.get("return_components") or {})
    _print_mapping("annotations", record.get("annotations") or {})


def cmd_replay(args: argparse.Namespace) -> int:
    """Print stored episodes (a trajectory JSONL file) as transcripts with their reward breakdown."""
    path = Path(args.file)
    held = 0
    for index, (number, record) in enumerate(_trajectories(path)):
        held = index + 1
        if args.episode is None or args.episode == index:
            if index and args.episode is None:
                print()
            _print_trajectory(index, number, record, args.full)
            if args.episode is not None:
                return 0
    if args.episode is not None:
        raise UsageError(
            f"--episode {args.episode} is out of range: {path} holds {held} episodes"
            + (f" (0 to {held - 1})" if held else "")
        )
    if not held:
        print(f"{path} holds no episodes")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog=textwrap.dedent(__doc__.split("\n\n")[1]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formats = sorted(RENDERERS)

    def add_episode_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("id", metavar="ID", help="a registered env id, e.g. trace/precondition-v0")
        p.add_argument("--seed", type=natural, default=0, help="reset seed; picks the task (default: 0)")
        p.add_argument(
            "--task-id",
            default=None,
            metavar="T",
            help="play this task id instead (e.g. precondition-17, or a τ²-bench task id)",
        )
        p.add_argument("--format", choices=formats, default=None, help="observation format (default: the spec's)")
        p.add_argument(
            "--param",
            action="append",
            metavar="KEY=VALUE",
            help="override a task-family param, e.g. --param refuse_rate=0.8 (repeatable)",
        )
        p.add_argument(
            "--data-dir",
            default=None,
            metavar="DIR",
            help="τ²-bench data directory, for trace/tau2-retail-v0 (default: $TAU2_DATA_DIR)",
        )

    p = sub.add_parser("list", help="table of the registered ids", description="Table of the registered ids.")
    p.add_argument("--json", action="store_true", help="print a JSON list of the ids and their specs' summaries")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "show",
        help="print a spec and one oracle-played episode",
        description="Print the spec JSON, one oracle-played episode as a transcript, and its outcome.",
    )
    add_episode_flags(p)
    p.add_argument(
        "--full",
        action="store_true",
        help=f"print the whole first observation (default: its first {_OBS_PREVIEW} characters)",
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "validate",
        help="validate spec files (none: every registered spec)",
        description="Validate spec files against the schema and the registries; exit 1 if any fails.",
    )
    p.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help="spec .json files, or directories of them (none: every registered spec, and the files "
        "registration skipped)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "play",
        help="play an episode as the agent in the terminal",
        description="Play one episode as the agent: one action per line on stdin.\n\n" + PLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_episode_flags(p)
    p.set_defaults(func=cmd_play)

    p = sub.add_parser(
        "check",
        help="run the API-contract checker on ids or spec files (none: every id)",
        description="Run trace_envs.testing.check_text_env on envs (registering spec files "
        "first); exit 1 on a failure. With no argument it checks every registered id, "
        "skipping those whose data is absent.",
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="ID|SPEC",
        help="registered ids, or spec .json files to register and check (none: every registered id)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="τ²-bench data directory, for envs that read one (default: $TAU2_DATA_DIR)",
    )
    p.add_argument("--episodes", type=int, default=3, help="oracle episodes (seeds) to check (default: 3)")
    p.add_argument("--seed", type=natural, default=0, help="first seed (default: 0)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "tau2-check",
        help="play every τ²-bench task of a data dir with the oracle",
        description="Check a τ²-bench data directory: the oracle plays every task; prints the "
        "counts that pass and fail; exit 1 if any fails.",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="τ²-bench data directory holding domains/retail (default: $TAU2_DATA_DIR)",
    )
    p.add_argument("--limit", type=natural, default=0, help="check only the first N tasks (default: all)")
    p.set_defaults(func=cmd_tau2_check)

    p = sub.add_parser(
        "bench",
        help="throughput benchmark (source checkout only)",
        description="Run benchmarks/bench_envs.py: resets/s, oracle and adversarial steps/s and "
        "peak memory per id; prints the table, and writes envs.json and envs.md to --out.",
    )
    p.add_argument("--ids", nargs="+", metavar="ID", default=None, help="ids to measure (default: every registered id)")
    p.add_argument(
        "--seconds", type=float, default=2.0, help="timed budget per id, split over its four timed loops (default: 2)"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write envs.json and envs.md there, e.g. benchmarks/results to update the committed "
        "results (default: print the table only)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "replay",
        help="print stored episodes as transcripts with their rewards",
        description="Print the episodes of a trajectory file (JSONL, as `trace collect` and "
        "`trace evaluate --trajectories` write) as transcripts: each turn's observation, "
        "action and reward, then success, the return and its components.",
    )
    p.add_argument("file", metavar="TRAJECTORIES.jsonl", help="a trajectory file, one episode per line")
    p.add_argument(
        "--episode",
        type=natural,
        default=None,
        metavar="N",
        help="print only episode N, counted from 0 in file order (default: every episode)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help=f"print long observations whole (default: their first and last {_OBS_PREVIEW // 2} characters)",
    )
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 a failed check, 2 a usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: return the code instead of exiting
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "episodes", 1) < 1:
        print(f"{PROG}: error: --episodes must be >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    if getattr(args, "seconds", 1.0) <= 0:
        print(f"{PROG}: error: --seconds must be > 0, got {args.seconds}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except TraceError as exc:  # unknown ids, bad specs, missing data: a message, not a traceback
        message = exc.for_cli() if isinstance(exc, tau2.DataError) else exc
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
