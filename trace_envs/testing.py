"""A public test kit: hypothesis strategies and a checker for trace envs.

Run the same checks on your own specs that the project runs on its built-ins:

>>> from trace_envs import TraceEnv
>>> from trace_envs.testing import check_text_env
>>> summary = check_text_env(TraceEnv("my_specs/my-env-v0.json"))

and property-test them with the strategies::

    from hypothesis import given
    from trace_envs.testing import actions, specs

    @given(specs())
    def test_my_family(spec): ...

:func:`check_text_env` needs only the package; the strategies need hypothesis
(``pip install "trace-rl[dev]"``), which is imported when a strategy is first built.
This module never imports pytest.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from trace_envs.actions import MAX_ACTION_CHARS, parse_action, say, tool_call
from trace_envs.errors import ResetNeeded
from trace_envs.oracle import OraclePolicy
from trace_envs.trivial import TrivialPolicy, trivial_policies

__all__ = [
    "ANNOTATION_KEYS",
    "END_KEYS",
    "INFO_KEYS",
    "actions",
    "adversarial_actions",
    "adversarial_examples",
    "check_text_env",
    "specs",
    "tool_calls",
    "TrivialPolicy",
    "admissible_coverage",
    "check_admissible_actions",
    "equivalent_action",
    "state_key",
    "trivial_policies",
]

#: Keys every ``reset`` and ``step`` info holds.
INFO_KEYS: tuple[str, ...] = (
    "env_id",
    "spec_version",
    "capability",
    "task_id",
    "seed",
    "step",
    "messages",
    "tools",
    "reward_components",
)
#: Keys the last ``step`` info of an episode adds.
END_KEYS: tuple[str, ...] = ("success", "return_components")
#: Capability annotations the last ``step`` info of an episode adds (a sample of them).
ANNOTATION_KEYS: tuple[str, ...] = ("preconditions_checked", "violating_writes", "args_exact")

_TOL = 1e-6
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_HOSTILE_NAMES = (
    "__class__",
    "__init__",
    "__dict__",
    "__getattribute__",
    "../../etc/passwd",
    "..",
    "/",
    "",
    " ",
    "\t",
    "tool\x00name",
    "é中🙂",
    "a" * 300,
    "get_order_details ",
    "GET_ORDER_DETAILS",
    "fn()",
    "eval",
    "os.system",
)


def _strategies():
    """``hypothesis.strategies``, or an ImportError that names the extra to install."""
    try:
        import hypothesis.strategies as st
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('trace_envs.testing strategies need hypothesis: pip install "trace-rl[dev]"') from exc
    return st


def _wrap(payload: str) -> str:
    return f"{_OPEN}{payload}{_CLOSE}"


def _json_call(name: Any, arguments: Any, *, bare: bool = False, **extra: Any) -> str:
    """A call built with json.dumps (``tool_call`` needs a str name and keyword arguments)."""
    text = json.dumps({"name": name, "arguments": arguments, **extra})
    return text if bare else _wrap(text)


def adversarial_examples(tool_names: Sequence[str] = ("get_order_details",)) -> list[str]:
    """A fixed list of hostile actions: what the strategies draw from, usable without hypothesis."""
    names = list(tool_names) or ["get_order_details"]
    name = "get_order_details" if "get_order_details" in names else names[0]
    deep_args = '{"a":' * 990 + "1" + "}" * 990  # parseable JSON near the recursion limit
    return [
        "",
        " ",
        "\n\t  \r\n",
        "\x00",
        "hello\x00world",
        "\ud800",
        "ok \udfff then",
        "\ufeff",
        "\u200b" * 10,
        "a" * (MAX_ACTION_CHARS - 1),
        "b" * MAX_ACTION_CHARS,
        "c" * (MAX_ACTION_CHARS + 1),
        "d" * 100_000,
        _wrap('{"name": "' + "x" * MAX_ACTION_CHARS + '"}'),
        "[" * 50_000,
        '{"a":' * 5000,
        _wrap("[" * 50_000),
        _wrap('{"a":' * 5000),
        _wrap(f'{{"name": "{name}", "arguments": {deep_args}}}'),
        f'{{"name": "{name}", "arguments": {deep_args}}}',
        _wrap(""),
        _wrap("   "),
        _wrap("{"),
        _wrap("{bad json}"),
        _wrap("null"),
        _wrap("42"),
        _wrap('"str"'),
        _wrap("[]"),
        _wrap("{}"),
        _OPEN,
        _CLOSE,
        f'{_OPEN}{{"name": "{name}"',
        _CLOSE + _OPEN,
        _wrap(f'{{"name": "{name}", "arguments": {{}}}}') * 2,
        _json_call(name, {}) + " and " + _json_call(name, {}),
        _json_call(None, {}),
        _json_call(7, {}),
        _json_call("", {}),
        _json_call([name], {}),
        _json_call(name, [1, 2]),
        _json_call(name, 5),
        _json_call(name, None),
        _json_call(name, "not json"),
        _json_call(name, '["a"]'),
        _json_call(name, json.dumps({"order_id": "#W0000000"})),
        _json_call(name, ""),
        _json_call(name, {"order_id": 123}),
        _json_call(name, {"order_id": None}),
        _json_call(name, {"order_id": ["#W1"]}),
        _json_call(name, {"order_id": {"$ne": 1}}),
        _json_call(name, {"order_id": True}),
        _json_call(name, {"order_id": 1.5e308}),
        _json_call(name, {"__class__": "x"}),
        _json_call(name, {"": ""}),
        _json_call(name, {"order_id": "#W0000000", "extra": 1}),
        _json_call(name, {}, extra_key=1),
        _json_call(name, {"order_id": "#W0000000"}, bare=True),
        '{"name": 5}',
        '{"name": "x", "arguments": [',
        *(_json_call(hostile, {}) for hostile in _HOSTILE_NAMES),
        *(_json_call(hostile, {}, bare=True) for hostile in _HOSTILE_NAMES[:4]),
        '{"arguments": {}}',
        "{}",
        "{ }",
        "[]",
        "null",
        "NaN",
        "Infinity",
        '{"name": NaN}',
        _wrap('{"name": "x", "arguments": {"a": NaN, "b": Infinity}}'),
        "é中文🙂 " * 50,
        "\u202e reversed",
        "<tool_call",
        "tool_call>",
        "</tool_call><tool_call>",
        "Goodbye!\x00",
        "please confirm: cancel everything, order #W" + "9" * 5000,
    ]


def adversarial_actions():
    """Hostile agent turns: the env must turn each into an error result, never an exception.

    Huge strings up to and beyond ``MAX_ACTION_CHARS``, NUL and binary text, lone
    surrogates, deeply nested JSON, ``<tool_call>`` blocks with invalid JSON or several
    blocks, hostile tool names, non-dict or string arguments, wrong-typed arguments,
    unicode, and empty or whitespace-only text.
    """
    st = _strategies()
    sizes = st.sampled_from([0, 1, MAX_ACTION_CHARS - 1, MAX_ACTION_CHARS, MAX_ACTION_CHARS + 1, 3 * MAX_ACTION_CHARS])
    json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
    json_values = st.recursive(
        json_scalars,
        lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)),
        max_leaves=8,
    )
    names = st.one_of(st.sampled_from(_HOSTILE_NAMES), st.text(max_size=30))
    return st.one_of(
        st.sampled_from(adversarial_examples()),
        st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "{", "[", " ", "é", "🙂", "\x00"]), sizes),
        st.builds(lambda n: _wrap('{"name": "' + "n" * n + '", "arguments": {}}'), sizes),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
        st.text(st.characters(categories=["Cs", "Cc", "Co", "Cn"]), max_size=20),
        st.text(max_size=200),
        st.text(st.sampled_from(" \t\r\n\x0b\x0c\u00a0\u2028\u3000"), max_size=20),
        st.integers(1, 60_000).map(lambda depth: "[" * depth),
        st.integers(1, 6000).map(lambda depth: _wrap('{"name": "x", "arguments": ' + '{"a":' * depth)),
        st.integers(1, 1500).map(lambda d: _wrap('{"name": "x", "arguments": ' + '{"a":' * d + "1" + "}" * (d + 1))),
        st.text(max_size=60).map(_wrap),
        st.lists(st.text(max_size=20).map(_wrap), min_size=2, max_size=4).map("".join),
        st.builds(_json_call, names, st.one_of(json_values, st.text(max_size=30))),
        st.builds(
            lambda n, a: _json_call(n, a, bare=True),
            names,
            st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        ),
        st.builds(lambda n, a: _json_call(n, json.dumps(a)), names, json_values),
    )


def tool_calls(tool_schemas: Sequence[Mapping[str, Any]]):
    """Well-formed calls of the given tools with wrong values and types.

    The name is right; each declared parameter gets a value drawn from text, integers,
    lists, None or dicts; sometimes a required key is missing or an extra key is added.
    ``tool_schemas`` is a list of OpenAI function schemas, such as ``info["tools"]``.
    """
    st = _strategies()
    schemas = [s for s in tool_schemas if isinstance(s, Mapping) and "function" in s]
    if not schemas:
        raise ValueError("tool_calls() needs at least one OpenAI function schema, e.g. info['tools']")
    values = st.one_of(
        st.text(max_size=30),
        st.integers(),
        st.lists(st.text(max_size=12), max_size=3),
        st.none(),
        st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
    )

    @st.composite
    def one_call(draw, schema):
        fn = schema["function"]
        props = list(fn.get("parameters", {}).get("properties", {}))
        args = {}
        for key in props:
            if draw(st.integers(0, 9)) == 0:
                continue  # sometimes a key is missing
            args[key] = draw(values)
        if draw(st.integers(0, 5)) == 0:
            args[draw(st.text(min_size=1, max_size=10))] = draw(values)  # sometimes an extra key
        if draw(st.booleans()):
            return tool_call(fn["name"], **args)
        return json.dumps({"name": fn["name"], "arguments": args})  # the bare-JSON form

    return st.sampled_from(schemas).flatmap(one_call)


def actions(tool_schemas: Sequence[Mapping[str, Any]] | None = None):
    """A mix of user-facing messages, valid-shaped tool calls and adversarial strings."""
    st = _strategies()
    cue_words = st.sampled_from(
        [
            "Please tell me your email.",
            "Shall I proceed?",
            "I cannot do that.",
            "What is your order id?",
            "Can you confirm the zip code?",
            "Goodbye!",
            "The total is $12.50.",
            "I will cancel order #W0000000. Confirm?",
            "ok",
            "yes",
        ]
    )
    messages = st.one_of(
        cue_words, st.text(max_size=80).map(say), st.lists(cue_words, min_size=1, max_size=3).map(" ".join)
    )
    parts = [messages, adversarial_actions()]
    if tool_schemas:
        parts.insert(1, tool_calls(tool_schemas))
    return st.one_of(*parts)


def specs(*, families: Sequence[str] | None = None, spec_id: str = "testing/drawn-v0"):
    """Valid spec dicts: a registered family with its defaults, random components and weights.

    Every drawn spec passes :func:`trace_envs.load_spec` and makes a working env where it
    is drawn: the declared range is computed with :func:`trace_envs.reward.reward_range`,
    success lists only components with a positive weight, and families that cannot make a
    task here with their default params (``tau2`` without τ²-bench data) are left out.
    ``families`` restricts the draw to those families; naming one that cannot make a task
    here is a ValueError that says why.
    """
    st = _strategies()
    from random import Random

    from trace_envs.domains import domain_names, get_domain
    from trace_envs.errors import SpecError
    from trace_envs.render import RENDERERS
    from trace_envs.reward import COMPONENTS, reward_range
    from trace_envs.spec import schema
    from trace_envs.tasks import FAMILIES

    names = sorted(families or FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; registered: {sorted(FAMILIES)}")
    why_not = {}
    for name in names:  # can the family make a task here with its defaults?
        fam = FAMILIES[name]
        try:
            fam.generate(Random(0), dict(fam.defaults), seed=0)
        except (SpecError, OSError) as exc:
            why_not[name] = str(exc)
    if families and why_not:
        raise ValueError(
            f"task families {sorted(why_not)} cannot make tasks here: "
            + "; ".join(f"{n}: {why}" for n, why in why_not.items())
        )
    names = [n for n in names if n not in why_not]
    props = schema()["properties"]
    user_kinds = props["user"]["properties"]["kind"]["enum"]
    formats = [f for f in props["observation"]["properties"]["format"]["enum"] if f in RENDERERS]
    turns = props["max_turns"]
    chars = props["observation"]["properties"]["max_chars"]
    weight = st.integers(1, 100).map(lambda w: w / 100)
    component_names = sorted(COMPONENTS)

    @st.composite
    def draw_spec(draw) -> dict[str, Any]:
        fam = FAMILIES[draw(st.sampled_from(names))]
        domain = draw(st.sampled_from(domain_names()))
        all_tools = list(get_domain(domain).tools)
        chosen = draw(
            st.lists(st.sampled_from(component_names), min_size=1, max_size=len(component_names), unique=True)
        )
        weights: dict[str, float] = {}
        for name in chosen:
            w = draw(weight)
            # Penalties (shaped terms) are usually negative, outcome terms usually positive.
            negative = draw(st.integers(0, 4)) != 0 if COMPONENTS[name].shaped else draw(st.integers(0, 9)) == 0
            weights[name] = -w if negative else w
        positive = [n for n, w in weights.items() if w > 0]
        if not positive:
            name = draw(st.sampled_from([n for n in component_names if not COMPONENTS[n].shaped]))
            weights[name] = draw(weight)
            positive = [name]
        success = draw(st.lists(st.sampled_from(positive), min_size=1, max_size=len(positive), unique=True))
        lo, hi = reward_range(weights)
        explicit = draw(st.lists(st.sampled_from(sorted(fam.defaults)), unique=True)) if fam.defaults else []
        domain_part: dict[str, Any] = {"name": domain}
        if draw(st.booleans()):
            extra = draw(st.lists(st.sampled_from(all_tools), unique=True, max_size=len(all_tools)))
            domain_part["tools"] = list(dict.fromkeys([*fam.needs_tools, *extra])) or all_tools[:1]
        observation: dict[str, Any] = {"format": draw(st.sampled_from(formats))}
        if draw(st.booleans()):
            observation["max_chars"] = draw(st.integers(chars["minimum"], min(chars["maximum"], 65_536)))
        return {
            "id": spec_id,
            "version": draw(st.integers(0, 5)),
            "capability": fam.capability or "target",
            "description": f"drawn by trace_envs.testing.specs() from family {fam.name!r}",
            "domain": domain_part,
            "tasks": {"family": fam.name, "params": {k: copy.deepcopy(fam.defaults[k]) for k in explicit}},
            "user": {"kind": draw(st.sampled_from(user_kinds))},
            "reward": {"components": weights, "range": [lo, hi], "success": success},
            "max_turns": draw(st.integers(turns["minimum"], min(turns["maximum"], 100))),
            "observation": observation,
        }

    return draw_spec()


# ---------------------------------------------------------------------------- checker
class _Run:
    """One episode's trajectory, for comparisons."""

    def __init__(self) -> None:
        self.obs: list[str] = []
        self.rewards: list[float] = []
        self.flags: list[tuple[bool, bool]] = []
        self.infos: list[dict[str, Any]] = []

    def add(self, obs: str, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        self.obs.append(obs)
        self.rewards.append(reward)
        self.flags.append((terminated, truncated))
        self.infos.append(info)


def _fail(env_id: str, what: str) -> AssertionError:
    return AssertionError(f"check_text_env({env_id}): {what}")


def _check_info(env_id: str, info: Mapping[str, Any], where: str, weights: Mapping[str, float]) -> None:
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise _fail(env_id, f"{where}: info lacks contract keys {missing}; it has {sorted(info)}")
    comps = info["reward_components"]
    if set(comps) != set(weights):
        raise _fail(env_id, f"{where}: reward_components keys {sorted(comps)} != spec components {sorted(weights)}")
    bad = {k: v for k, v in comps.items() if not (isinstance(v, float | int) and math.isfinite(v))}
    if bad:
        raise _fail(env_id, f"{where}: non-finite reward components {bad}")


def _check_end(env_id: str, info: Mapping[str, Any], where: str) -> None:
    missing = [k for k in (*END_KEYS, *ANNOTATION_KEYS) if k not in info]
    if missing:
        raise _fail(env_id, f"{where}: the last info lacks {missing}; it has {sorted(info)}")
    if not isinstance(info["success"], bool):
        raise _fail(env_id, f"{where}: info['success'] must be a bool, got {info['success']!r}")


def _episode(
    env,
    spec,
    seed: int,
    plan,
    *,
    env_id: str,
    where: str,
    options=None,
    run: _Run | None = None,
    check_spaces: bool = True,
) -> tuple[_Run, float]:
    """Reset with ``seed`` and act with ``plan(obs, info)`` until the episode ends."""
    u = env.unwrapped
    run = run or _Run()
    obs, info = env.reset(seed=seed, options=options)
    if check_spaces and not u.observation_space.contains(obs):
        raise _fail(
            env_id,
            f"{where}: reset's observation ({type(obs).__name__}, {len(obs)} chars) is not in "
            f"observation_space {u.observation_space}",
        )
    _check_info(env_id, info, f"{where} reset", spec.weights)
    if info["step"] != 0:
        raise _fail(env_id, f"{where}: reset info['step'] is {info['step']!r}, expected 0")
    run.add(obs, 0.0, False, False, info)
    total = 0.0
    for step in range(1, u.max_turns + 1):
        action = plan(obs, info)
        if check_spaces and not u.action_space.contains(action):
            raise _fail(env_id, f"{where}: the action {action[:80]!r} is not in action_space {u.action_space}")
        obs, reward, terminated, truncated, info = env.step(action)
        _check_step(
            env_id,
            spec,
            f"{where} step {step}",
            obs,
            reward,
            terminated,
            truncated,
            info,
            check_spaces,
            u.observation_space,
        )
        if info["step"] != step:
            raise _fail(env_id, f"{where} step {step}: info['step'] is {info['step']!r}")
        run.add(obs, reward, terminated, truncated, info)
        total += reward
        if terminated or truncated:
            _check_end(env_id, info, f"{where} step {step}")
            return run, total
    raise _fail(env_id, f"{where}: no termination or truncation after max_turns={u.max_turns} steps")


def _check_step(env_id, spec, where, obs, reward, terminated, truncated, info, check_spaces, obs_space) -> None:
    if not isinstance(obs, str):
        raise _fail(env_id, f"{where}: observation is {type(obs).__name__}, expected str")
    if check_spaces and not obs_space.contains(obs):
        raise _fail(env_id, f"{where}: observation of {len(obs)} chars is not in {obs_space}")
    if not isinstance(reward, float | int) or isinstance(reward, bool) or not math.isfinite(reward):
        raise _fail(env_id, f"{where}: reward {reward!r} is not a finite number")
    if not isinstance(terminated, bool) or not isinstance(truncated, bool):
        raise _fail(env_id, f"{where}: terminated/truncated must be bools, got {terminated!r}, {truncated!r}")
    _check_info(env_id, info, where, spec.weights)
    parts = sum(info["reward_components"].values())
    if abs(parts - reward) > _TOL:
        raise _fail(env_id, f"{where}: reward {reward!r} != sum of info['reward_components'] {parts!r}")


def _check_return(env_id: str, spec, total: float, info: Mapping[str, Any], where: str) -> None:
    lo, hi = spec.range
    if not (lo - _TOL <= total <= hi + _TOL):
        raise _fail(env_id, f"{where}: return {total!r} is outside the declared range [{lo}, {hi}]")
    final = info["return_components"]
    weighted = sum(spec.weights[n] * final[n] for n in spec.weights)
    if abs(weighted - total) > _TOL:
        raise _fail(
            env_id, f"{where}: return {total!r} != weighted sum of return_components {weighted!r} ({dict(final)})"
        )


def _same(env_id: str, a: _Run, b: _Run, what: str) -> None:
    if len(a.obs) != len(b.obs):
        raise _fail(env_id, f"{what}: episodes differ in length ({len(a.obs)} vs {len(b.obs)} steps)")
    for i, (x, y) in enumerate(zip(a.obs, b.obs, strict=True)):
        if x != y:
            raise _fail(env_id, f"{what}: observations differ at step {i}: {x[:120]!r} vs {y[:120]!r}")
    if a.rewards != b.rewards or a.flags != b.flags:
        raise _fail(env_id, f"{what}: rewards or done flags differ: {a.rewards}/{a.flags} vs {b.rewards}/{b.flags}")
    for i, (x, y) in enumerate(zip(a.infos, b.infos, strict=True)):
        for key in ("reward_components", "return_components", "success", "task_id", "messages"):
            if x.get(key) != y.get(key):
                raise _fail(
                    env_id, f"{what}: info[{key!r}] differs at step {i}: {x.get(key)!r:.200} vs {y.get(key)!r:.200}"
                )


def _replay(actions_: list[str]):
    it = iter(actions_)
    return lambda obs, info: next(it, say("Goodbye!"))


def check_text_env(env, episodes: int = 3, seed: int = 0, trivial_bound: float | None = 0.05) -> dict[str, Any]:
    """Check a trace env against the API contract; raise AssertionError on the first failure.

    ``env`` is a :class:`~trace_envs.TraceEnv` or a ``gym.make`` result wrapping one. The
    checks: gymnasium's ``check_env``; observations and actions in their spaces; the info
    keys contract on every step and at the end; determinism (same seed and actions give
    the same run); the oracle reaching success and the declared maximum return on
    ``episodes`` seeds; each of :func:`trivial_policies` (say goodbye, empty text, refuse
    everything, transfer, random tool calls) earning a mean return of at most
    ``trivial_bound`` on the same seeds (``None`` skips it; benchmark tasks, scored by
    their benchmark's own rule, are exempt); adversarial actions never raising, with finite rewards, a
    ``parse_error`` for every format error and a return inside the declared range; and
    pickle and deepcopy round trips mid-episode that continue identically.
    Returns a small summary dict.
    """
    from gymnasium.utils.env_checker import check_env

    u = env.unwrapped
    spec = getattr(u, "trace_spec", None)
    if spec is None:
        raise TypeError(f"check_text_env needs a trace_envs.TraceEnv (or a wrapper of one), got {type(u).__name__}")
    env_id = spec.id
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_env(u, skip_render_check=True)

    seeds = [seed + i for i in range(episodes)]
    oracle = OraclePolicy()

    def oracle_plan(obs, info):
        return oracle.act(obs, info)

    # Oracle: success and the declared maximum, with the recorded actions for replays.
    returns, plans = [], []
    for s in seeds:
        obs, info = env.reset(seed=s)
        oracle.reset(env)
        plan = list(oracle.plan)
        run, total = _episode(env, spec, s, _replay(plan), env_id=env_id, where=f"oracle seed {s}")
        info = run.infos[-1]
        _check_return(env_id, spec, total, info, f"oracle seed {s}")
        if not info["success"]:
            raise _fail(
                env_id,
                f"oracle seed {s}: the oracle did not succeed; return_components="
                f"{info['return_components']}, annotations: ended_by={info.get('ended_by')!r}, "
                f"db_diff={info.get('db_diff')!r}",
            )
        if abs(total - spec.range[1]) > _TOL:
            raise _fail(
                env_id,
                f"oracle seed {s}: the oracle's return {total!r} != declared max {spec.range[1]!r}; "
                f"return_components={info['return_components']}",
            )
        returns.append(total)
        plans.append(plan)

        # Determinism: the same seed and actions again, on this env and on a fresh copy.
        again, _ = _episode(env, spec, s, _replay(plan), env_id=env_id, where=f"replay seed {s}")
        _same(env_id, run, again, f"seed {s} run twice")
        # The task id alone picks the same task.
        obs_t, info_t = env.reset(seed=s + 10_007, options={"task_id": info["task_id"]})
        if obs_t != run.obs[0] or info_t["task_id"] != info["task_id"]:
            raise _fail(env_id, f"seed {s}: reset(options={{'task_id': {info['task_id']!r}}}) gave another task")

    # Trivial policies earn (almost) nothing: a reward that pays them pays for something else.
    trivial: dict[str, float] = {}
    for name, policy in trivial_policies(seed).items() if trivial_bound is not None else ():
        totals, paid = [], {}
        for s in seeds:
            env.reset(seed=s)
            if u.task.benchmark:
                continue

            def plan(obs, info, policy=policy):
                if info["step"] == 0:
                    policy.reset(env)
                return policy.act(obs, info)

            run, total = _episode(env, spec, s, plan, env_id=env_id, where=f"trivial policy {name!r} seed {s}")
            totals.append(total)
            for comp, value in run.infos[-1]["return_components"].items():
                if spec.weights[comp] * value > 0:
                    paid[comp] = paid.get(comp, 0.0) + spec.weights[comp] * value / len(seeds)
        if totals:
            trivial[name] = sum(totals) / len(totals)
            if trivial[name] > trivial_bound + _TOL:
                raise _fail(
                    env_id,
                    f"the trivial policy {name!r} earns a mean return of {trivial[name]:.3f} > "
                    f"{trivial_bound} on seeds {seeds}; the components that paid it (mean): "
                    f"{ {k: round(v, 3) for k, v in paid.items()} }. Weight components that pay only "
                    f"for evidence of competence (see trace_envs.reward)",
                )

    # Caller bugs raise: stepping a finished episode.
    _episode(env, spec, seeds[0], _replay(plans[0]), env_id=env_id, where="finish")
    try:
        u.step(say("hello"))
    except ResetNeeded:
        pass
    else:
        raise _fail(env_id, "step() after the episode ended did not raise trace_envs.ResetNeeded")

    # Adversarial actions: never raise, finite rewards, parse_error on every format error.
    names = [t["function"]["name"] for t in u.tool_schemas] or ["get_order_details"]
    hostile = adversarial_examples(names)
    adversarial_steps = 0
    size = max(1, u.max_turns - 1)
    chunks = [hostile[i : i + size] for i in range(0, len(hostile), size)]
    for k, chunk in enumerate(chunks):
        s = seeds[k % len(seeds)]
        # Every chunk but the last ends with a goodbye; the last runs on to truncation.
        filler = "\x00" if k == len(chunks) - 1 else say("Thanks, goodbye!")
        it = iter(chunk)
        obs, info = env.reset(seed=s)
        seen_errors = u.log.format_errors
        total = 0.0
        done = False
        step = 0
        while not done:
            action = next(it, filler)
            step += 1
            where = f"adversarial seed {s} step {step} action {action[:60]!r}"
            try:
                obs, reward, terminated, truncated, info = env.step(action)
            except Exception as exc:
                raise _fail(env_id, f"{where}: step raised {type(exc).__name__}: {exc}") from exc
            adversarial_steps += 1
            _check_step(env_id, spec, where, obs, reward, terminated, truncated, info, True, u.observation_space)
            errors = u.log.format_errors
            if (errors > seen_errors) != ("parse_error" in info):
                raise _fail(
                    env_id,
                    f"{where}: format errors went {seen_errors} -> {errors} but "
                    f"parse_error={info.get('parse_error')!r}",
                )
            if parse_action(action).kind == "error" and "parse_error" not in info:
                raise _fail(env_id, f"{where}: parse_action calls it an error but info has no parse_error")
            seen_errors = errors
            total += reward
            done = terminated or truncated
            if step > u.max_turns:
                raise _fail(env_id, f"{where}: the episode outlived max_turns={u.max_turns}")
        _check_end(env_id, info, f"adversarial seed {s}")
        _check_return(env_id, spec, total, info, f"adversarial seed {s}")

    # Pickle and deepcopy mid-episode: every copy continues identically.
    plan = plans[0]
    cut = max(1, len(plan) // 2)
    env.reset(seed=seeds[0])
    for action in plan[:cut]:
        env.step(action)
    copies = {"pickle": pickle.loads(pickle.dumps(env)), "deepcopy": copy.deepcopy(env)}
    rest = plan[cut:]

    def finish(e) -> _Run:
        run = _Run()
        for action in rest:
            run.add(*e.step(action))
            if run.flags[-1][0] or run.flags[-1][1]:
                break
        return run

    original = finish(env)
    for how, other in copies.items():
        _same(env_id, original, finish(other), f"{how} round trip mid-episode (seed {seeds[0]}, step {cut})")

    return {
        "env_id": env_id,
        "episodes": episodes,
        "seeds": seeds,
        "oracle_returns": returns,
        "oracle_success": len(returns),
        "trivial_returns": trivial,
        "adversarial_steps": adversarial_steps,
        "range": tuple(spec.range),
    }


# ---------------------------------------------------------------------------- admissible actions
def state_key(env) -> tuple:
    """What an action changed: requests resolved, refused, answered and closed, writes confirmed
    and done, records read, authentication, the end, answers and format errors."""
    log = env.unwrapped.log
    return (
        tuple(log.resolved),
        tuple(log.refused),
        tuple(log.answered),
        tuple(log.closed),
        frozenset(log.confirmed),
        frozenset(log.done_writes),
        frozenset(log.reads),
        log.auth_step is not None,
        env.unwrapped._over,
        log.wrong_answers,
        log.format_errors,
    )


def equivalent_action(env, action: str, candidates: Sequence[str]) -> str | None:
    """A candidate that leaves the env in the same :func:`state_key` as ``action`` does, if any.

    Only candidates of the same kind are tried (a message for a message, a call of the same
    tool for a call), each on a deep copy of ``env``.
    """
    if action in candidates:
        return action
    trial = copy.deepcopy(env.unwrapped)
    trial.step(action)
    want = state_key(trial)
    mine = parse_action(action)
    for c in candidates:
        theirs = parse_action(c)
        if theirs.kind != mine.kind or theirs.name != mine.name:
            continue
        trial = copy.deepcopy(env.unwrapped)
        trial.step(c)
        if state_key(trial) == want:
            return c
    return None


def admissible_coverage(
    env, seeds: Sequence[int], policy=None, near_misses: bool = False, max_actions: int = 128
) -> dict[str, Any]:
    """How often ``policy`` (default: the oracle) acts within the admissible list, on ``seeds``.

    Returns the steps, how many actions were listed exactly or by an equivalent
    (:func:`equivalent_action`), the misses by tool or message opening with up to five
    examples, and the list sizes (median, p90, max).
    """
    from collections import Counter

    from trace_envs.admissible import AdmissibleActions

    policy = policy or OraclePolicy()
    u = env.unwrapped
    exact = equivalent = 0
    misses: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    sizes: list[int] = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        policy.reset(env)
        lists = AdmissibleActions(info["tools"], near_misses=near_misses, max_actions=max_actions)
        done = False
        while not done:
            listed = lists.update(info["messages"])
            sizes.append(len(listed))
            action = policy.act(obs, info)
            if action in listed:
                exact += 1
            elif equivalent_action(u, action, listed) is not None:
                equivalent += 1
            else:
                parsed = parse_action(action)
                misses[parsed.name if parsed.kind == "tool" else "message: " + action[:24]] += 1
                if len(examples) < 5:
                    examples.append({"seed": seed, "step": info["step"], "action": action[:300]})
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    sizes.sort()
    steps = len(sizes)
    return {
        "steps": steps,
        "exact": exact,
        "equivalent": equivalent,
        "missed": steps - exact - equivalent,
        "coverage": (exact + equivalent) / steps if steps else 0.0,
        "misses": dict(misses.most_common()),
        "examples": examples,
        "size_median": sizes[steps // 2] if steps else 0,
        "size_p90": sizes[int(0.9 * steps)] if steps else 0,
        "size_max": sizes[-1] if steps else 0,
    }


def check_admissible_actions(env, episodes: int = 3, seed: int = 0, max_actions: int = 32) -> dict[str, Any]:
    """Property-check the admissible lists of a trace env on random walks through them.

    On ``episodes`` seeds, an agent picks uniformly from the list (with near-miss twins) at
    every step. Checked: every listed action except a near-miss twin is accepted without a
    parse error; the list is the same when rebuilt from the same history in one call
    (:func:`~trace_envs.admissible.admissible_actions`); no list exceeds ``max_actions``;
    every id in a listed tool call was shown to the agent before. Raises AssertionError.
    """
    import random
    import re

    from trace_envs.admissible import AdmissibleActions, admissible_actions

    u = env.unwrapped
    env_id = u.trace_spec.id
    ident = re.compile(r"#?W\d{7}|\b\d{10}\b|\b[a-z]+_[a-z]+_\d{4}\b|\b(?:credit_card|gift_card|paypal)_\d+\b")
    steps = 0
    for s in range(seed, seed + episodes):
        rng = random.Random(s)
        obs, info = env.reset(seed=s)
        plain = AdmissibleActions(info["tools"], max_actions=max_actions)
        twins = AdmissibleActions(info["tools"], near_misses=True, max_actions=max_actions)
        done = False
        while not done:
            listed = plain.update(info["messages"])
            with_twins = twins.update(info["messages"])
            where = f"seed {s} step {info['step']}"
            if len(with_twins) > max_actions:
                raise _fail(env_id, f"{where}: {len(with_twins)} admissible actions > max_actions={max_actions}")
            again = admissible_actions(info["messages"], info["tools"], near_misses=True, max_actions=max_actions)
            if again != with_twins:
                raise _fail(env_id, f"{where}: the list differs when rebuilt from the same history")
            shown = " ".join(str(m.get("content") or "") for m in info["messages"])
            for action in with_twins:
                for token in ident.findall(action):
                    if token.lstrip("#") not in shown:
                        raise _fail(
                            env_id,
                            f"{where}: listed action names {token!r}, which the agent has not "
                            f"been shown: {action[:200]!r}",
                        )
            action = rng.choice(with_twins)
            obs, _, terminated, truncated, info = env.step(action)
            if "parse_error" in info and action in listed:
                raise _fail(
                    env_id, f"{where}: the listed action {action[:200]!r} gave a parse error: {info['parse_error']}"
                )
            steps += 1
            done = terminated or truncated
    return {"env_id": env_id, "episodes": episodes, "steps": steps}
