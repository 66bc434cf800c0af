"""Real τ²-bench retail tasks as a task family.

The data is read from the ``data_dir`` param, else ``TAU2_DATA_DIR``: a directory with
``domains/retail/{db.json,tasks.json,policy.md}`` (τ²-bench's own layout, so a checkout's
``data/tau2`` works), or that ``retail`` directory itself. The 2.8 MB database is parsed
once per process and shared read-only by every episode (the env's copy-on-write tables
copy only the records an episode writes), and each task is converted once and cached.

A task becomes one :class:`Request` per gold write, in gold order. The deciding reads are
the gold reads that precede it and succeed. The offline user is scripted from the task
alone: it states ``reason_for_call`` in the first person, gives the identity
``known_info`` holds, confirms a proposal only when it names every value of a gold
write, and ends when every gold write is done or the agent transfers. It does not
improvise as the benchmark's LLM user does (see the README).

``reset(seed=s)`` plays task ``s % len(tasks)``; ``reset(options={"task_id": "5"})``
plays the task with that id. No τ²-bench code is used: the tools implement the
documented semantics.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from trace_envs.db import Database, Table
from trace_envs.errors import SpecError, ToolError
from trace_envs.tasks.base import Call, Request, Task, UserProfile, register_family

NAME = "tau2"
DEFAULTS = {"data_dir": ""}
HELP = {"data_dir": "τ²-bench data directory (holding domains/retail); empty: use $TAU2_DATA_DIR"}
ENV_VAR = "TAU2_DATA_DIR"

WRITE_TOOLS = frozenset(
    {
        "cancel_pending_order",
        "modify_pending_order_address",
        "modify_pending_order_items",
        "modify_pending_order_payment",
        "modify_user_address",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    }
)
_SKIP_AS_READ = frozenset(
    {"find_user_id_by_email", "find_user_id_by_name_zip", "calculate", "transfer_to_human_agents"}
)


@dataclass(frozen=True)
class Tau2Data:
    """One loaded data directory."""

    root: Path
    tables: dict[str, dict[str, Any]]
    tasks: tuple[dict[str, Any], ...]
    by_id: dict[str, int]
    policy: str


NEEDED = ("db.json", "tasks.json")  # policy.md is read too when present
SOURCE = (
    "the data/tau2 directory of a tau2-bench checkout (https://github.com/sierra-research/tau2-bench), "
    "which holds domains/retail/db.json and domains/retail/tasks.json (and policy.md)"
)


class DataError(SpecError):
    """The τ²-bench data is absent, incomplete or malformed.

    ``str()`` says how to pass the data in Python (``data_dir=``); :meth:`for_cli` says it
    for a command line (``--data-dir``).
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(self._fix("pass data_dir=DIR to gym.make"))

    def __reduce__(self):  # pickled (e.g. from a vector env's worker) with the problem, not the message
        return type(self), (self.problem,)

    def _fix(self, how: str) -> str:
        return f"{self.problem}. Fix: {how} (or set {ENV_VAR}=DIR), DIR being {SOURCE}"

    def for_cli(self) -> str:
        """The message for a command line, which takes the directory as ``--data-dir DIR``."""
        return self._fix("pass --data-dir DIR")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The retail data directory from the argument or ``$TAU2_DATA_DIR``; a :class:`DataError`
    names what is missing."""
    raw = str(data_dir) if data_dir else os.environ.get(ENV_VAR, "")
    if not raw:
        raise DataError("trace/tau2-retail-v0 needs the τ²-bench retail data, and no data directory was given")
    root = Path(raw).expanduser().resolve()  # loads are cached by path: a later chdir must not alias it
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"the τ²-bench data directory {root} {what}")
    nested = root / "domains" / "retail"
    # τ²-bench's layout (root/domains/retail), or the retail directory itself.
    retail = root if not nested.is_dir() and any((root / f).is_file() for f in NEEDED) else nested
    missing = [str(retail / f) for f in NEEDED if not (retail / f).is_file()]
    if missing:
        raise DataError(f"{root} is not τ²-bench data: no {' and no '.join(missing)}")
    return retail


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it as JSON ({exc})") from None


@functools.lru_cache(maxsize=4)
def load(retail_dir: Path) -> Tau2Data:
    """Parse a retail data directory once per process; malformed files are a DataError naming them."""
    tables = _read_json(retail_dir / "db.json")
    missing = [
        k
        for k in ("users", "orders", "products")
        if not isinstance(tables, dict) or not isinstance(tables.get(k), dict)
    ]
    if missing:
        raise DataError(
            f"{retail_dir / 'db.json'}: expected an object with the tables users, orders and products; "
            f"missing or not objects: {', '.join(missing)}"
        )
    tasks = _read_json(retail_dir / "tasks.json")
    expected = f"{retail_dir / 'tasks.json'}: expected a list of task objects, each with an id"
    if not isinstance(tasks, list):
        raise DataError(f"{expected}; it is not a list")
    bad = next((i for i, t in enumerate(tasks) if not (isinstance(t, dict) and "id" in t)), None)
    if bad is not None:
        raise DataError(f"{expected}; item {bad} is not an object with an id")
    policy_file = retail_dir / "policy.md"
    policy = policy_file.read_text(encoding="utf-8") if policy_file.is_file() else ""
    return Tau2Data(retail_dir, tables, tuple(tasks), {str(t["id"]): i for i, t in enumerate(tasks)}, policy)


def data_for(params: Mapping[str, Any]) -> Tau2Data:
    """The loaded data the params point at."""
    return load(resolve_data_dir(params.get("data_dir")))


# -- turning a task into requests -----------------------------------------------------
_PRONOUNS = [
    (r"\byou are\b", "I am"),
    (r"\byou were\b", "I was"),
    (r"\byou have\b", "I have"),
    (r"\byou've\b", "I've"),
    (r"\byou're\b", "I'm"),
    (r"\byourself\b", "myself"),
    (r"\byours\b", "mine"),
    (r"\byour\b", "my"),
    (r"\b(to|for|with|at|from|about|tell|give|ask|asks|let) you\b", r"\1 me"),
    (r"\byou\b", "I"),
]


def first_person(text: str) -> str:
    """Turn scenario instructions ("You want to ...") into the user's voice (a heuristic)."""

    def keep_case(repl: str):
        def sub(m: re.Match) -> str:
            out = m.expand(repl)
            return out[:1].upper() + out[1:] if m.group(0)[:1].isupper() else out

        return sub

    for pattern, repl in _PRONOUNS:
        text = re.sub(pattern, keep_case(repl), text, flags=re.I)
    return text


_VERBS = {"cancel": "cancel", "modify": "modify", "return": "return", "exchange": "exchange"}


def describe_call(call: Call) -> str:
    """The write in words, naming every argument value (what the scripted user checks)."""
    verb = _VERBS.get(call.name.split("_")[0], call.name)
    parts = []
    for key, value in call.arguments.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.replace('_', ' ')}: {shown}")
    return f"{verb} ({call.name.replace('_', ' ')}) with " + "; ".join(parts)


_NAME = re.compile(
    r"\b(?:you are|you're|your name is|you name is|i am|i'm)\s+(?:user\s+)?([A-Z][a-z]+)\s+([A-Z][a-z]+)", re.I
)
_ZIP = re.compile(r"\b(\d{5})\b")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_USER_ID = re.compile(r"\b[a-z]+_[a-z]+_\d{4}\b")


def _user_of(tables: Mapping[str, dict], known: str, gold: list[Call]) -> dict | None:
    """The customer's DB record, from known_info first, then from the gold actions."""
    users = tables["users"]
    uid = _USER_ID.search(known)
    if uid and uid.group(0) in users:
        return users[uid.group(0)]
    email = _EMAIL.search(known)
    if email:
        for u in users.values():
            if u["email"].lower() == email.group(0).lower():
                return u
    name, zip_code = _NAME.search(known), _ZIP.search(known)
    if name and zip_code:
        want = (name.group(1).lower(), name.group(2).lower(), zip_code.group(1))
        for u in users.values():
            if (u["name"]["first_name"].lower(), u["name"]["last_name"].lower(), u["address"]["zip"]) == want:
                return u
    for call in gold:  # the user a gold call looks up or writes to
        args = call.arguments
        if args.get("user_id") in users:
            return users[args["user_id"]]
        if args.get("order_id") in tables["orders"]:
            return users.get(tables["orders"][args["order_id"]]["user_id"])
        if call.name == "find_user_id_by_name_zip":
            for u in users.values():
                if (u["name"]["first_name"], u["name"]["last_name"], u["address"]["zip"]) == (
                    args.get("first_name"),
                    args.get("last_name"),
                    args.get("zip"),
                ):
                    return u
    return None


def _profile(user: dict | None, known: str) -> UserProfile:
    """What the customer says about themselves: known_info's email (even a wrong one) or name + zip."""
    if user is None:
        return UserProfile(user_id="", first_name="", last_name="", zip="", email="", auth="email")
    email = _EMAIL.search(known)
    zip_match = _ZIP.search(known)
    profile = UserProfile(
        user_id=user["user_id"],
        first_name=user["name"]["first_name"],
        last_name=user["name"]["last_name"],
        zip=zip_match.group(1) if zip_match else user["address"]["zip"],
        email=email.group(0) if email else user["email"],
        auth="email" if email else "name_zip",
        # With an email and a zip known, a customer whose email is not found falls back to name + zip.
        fallback=bool(email and zip_match),
    )
    return profile


@functools.lru_cache(maxsize=512)
def _convert(retail_dir: Path, index: int) -> Task:
    from trace_envs.domains.retail.tools import RETAIL_TOOLS  # the family module must not import tools eagerly

    data = load(retail_dir)
    raw = data.tasks[index]
    tid = str(raw["id"])
    crit = raw.get("evaluation_criteria") or {}
    instr = (raw.get("user_scenario") or {}).get("instructions") or {}
    if isinstance(instr, str):
        instr = {"reason_for_call": instr}
    actions = [Call(a["name"], a.get("arguments") or {}) for a in crit.get("actions") or []]
    tables = _initial_tables(data.tables, raw.get("initial_state"), RETAIL_TOOLS)
    # Replay the gold once: which reads succeed (only those can be required) and which
    # writes succeed (a gold write the tools refuse leaves the DB as it was, so it is no goal).
    db = Database({k: Table(v) for k, v in tables.items()})
    requests: list[Request] = []
    reads: list[Call] = []
    for call in actions:
        tool = RETAIL_TOOLS.get(call.name)
        if tool is None:
            continue
        try:
            tool.fn(db, **call.arguments)
            ok = True
        except (ToolError, TypeError):
            ok = False
        if call.name in WRITE_TOOLS:
            if ok:
                target = call.arguments.get("order_id") or call.arguments.get("user_id") or ""
                requests.append(
                    Request(
                        kind=call.name,
                        text="",
                        capabilities=("precondition_verification",),
                        desired=call,
                        required_reads=tuple(reads),
                        target=target,
                        describe=describe_call(call),
                    )
                )
            reads = []
        elif ok and call.name not in _SKIP_AS_READ:
            reads.append(call)
    known = str(instr.get("known_info") or "")
    profile = _profile(_user_of(tables, known, actions), known)
    communicate = tuple(str(s) for s in crit.get("communicate_info") or ())
    if communicate:  # resolved once the agent has said every string
        requests.append(Request(kind="inform", text="", capabilities=(), expects=communicate))
    if not requests:  # nothing to do or say: the conversation ends when the agent closes it
        requests.append(Request(kind="chat", text="", capabilities=()))
    reason = str(instr.get("reason_for_call") or "I need help with my account.")
    return Task(
        task_id=tid,
        family=NAME,
        tables=tables,
        user=profile,
        requests=requests,
        upfront=True,
        opening=f"Hi! {first_person(reason)}",
        params={},
        source={"family": NAME, "task_id": tid, "index": index, "data_dir": str(retail_dir)},
        communicate=communicate,
        benchmark="tau2",
        reward_basis=tuple(crit.get("reward_basis") or ("DB",)),
        gold_actions=tuple(actions),
        policy=data.policy,
        notes={
            "known_info": known,
            "unknown_info": str(instr.get("unknown_info") or ""),
            "task_instructions": str(instr.get("task_instructions") or ""),
            "nl_assertions": list(crit.get("nl_assertions") or []),
        },
    )


def _initial_tables(base: dict[str, dict], initial_state: Any, tools: Mapping[str, Any]) -> dict[str, dict]:
    """The shared tables, or (rarely) copies with the task's ``initial_state`` applied."""
    if not initial_state:
        return base
    init = initial_state.get("initialization_data") or {}
    agent_data = init.get("agent_data") or {}
    db = Database({k: Table(v) for k, v in base.items()})
    for table, records in agent_data.items():
        for rid, patch in (records or {}).items():
            rec = db[table].mut(rid) if rid in db[table] else {}
            _deep_update(rec, patch)
            db[table].put(rid, rec)
    for action in initial_state.get("initialization_actions") or []:
        tool = tools.get(action.get("func_name"))
        if tool is not None and action.get("env_type", "assistant") == "assistant":
            try:
                tool.fn(db, **(action.get("arguments") or {}))
            except ToolError:
                pass
    # Layer the touched records over the shared base: a shallow dict copy per table.
    return {
        name: {**t._base, **{k: v for k, v in t._over.items() if v is not None}} if t.touched() else t._base
        for name, t in db.tables.items()
    }


def _deep_update(target: dict, patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def generate(rng: Random, params: Mapping[str, Any], seed: int = 0) -> Task:
    """Task number ``seed % len(tasks)`` of the data directory."""
    data = data_for(params)
    if not data.tasks:
        raise DataError(f"{data.root}/tasks.json holds no tasks")
    return _convert(data.root, seed % len(data.tasks))


def by_id(task_id: str, params: Mapping[str, Any]) -> Task:
    """The task with τ²-bench id ``task_id``."""
    data = data_for(params)
    index = data.by_id.get(str(task_id))
    if index is None:
        import difflib

        close = difflib.get_close_matches(str(task_id), data.by_id, n=3)
        raise ValueError(
            f"task_id {task_id!r} is not a τ²-bench task id in {data.root}/tasks.json"
            + (f"; close ids: {close}" if close else f"; {len(data.by_id)} ids, e.g. {list(data.by_id)[:5]}")
        )
    return _convert(data.root, index)


def task_ids(params: Mapping[str, Any]) -> list[str]:
    """Every task id of the data directory, in file order."""
    return list(data_for(params).by_id)


register_family(NAME, generate, DEFAULTS, HELP, capability=None, by_id=by_id)
