"""trace/tau2-retail-v0: the real τ²-bench retail train tasks, scored offline.

Covers: the oracle solves all 74 tasks; a mutated or omitted gold write scores 0; writes
without confirmation or on other users' records show in the annotations; the offline
user; NL_ASSERTION / COMMUNICATE reporting; data-directory errors; initial_state.
Pickling, deepcopy and check_env are covered registry-wide (test_registry.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from helpers import HAVE_TAU2, TAU2_DIR, TAU2_MISSING

from trace_envs import OraclePolicy, SpecError, parse_action, say, tool_call
from trace_envs.db import Database, Table, diff_keys
from trace_envs.domains.retail.tools import CANCEL_REASONS, RETAIL_TOOLS
from trace_envs.errors import ToolError
from trace_envs.tasks import tau2
from trace_envs.tasks.base import Call, Task
from trace_envs.user import ScriptedUser

pytestmark = pytest.mark.skipif(not HAVE_TAU2, reason=TAU2_MISSING)

ENV_ID = "trace/tau2-retail-v0"
# An explicit TAU2_DATA_DIR wins (helpers sets it to TAU2_DIR when that exists).
DATA = Path(os.environ.get("TAU2_DATA_DIR") or TAU2_DIR)
GOODBYE = "Thank you for contacting us. Have a great day, goodbye!"
ASK_ID = "Before I can help, please tell me your email address, or your name and zip code, to verify your identity."


def _raw_tasks() -> list[dict[str, Any]]:
    if not HAVE_TAU2:
        return []
    try:
        retail = tau2.resolve_data_dir(DATA)
    except SpecError:
        return []
    return json.loads((retail / "tasks.json").read_text(encoding="utf-8"))


RAW = _raw_tasks()
RAW_BY_ID = {str(t["id"]): t for t in RAW}
TASK_IDS = list(RAW_BY_ID)
WRITE_TASK_IDS = [
    tid
    for tid, t in RAW_BY_ID.items()
    if any(a["name"] in tau2.WRITE_TOOLS for a in t["evaluation_criteria"]["actions"])
]


# -- helpers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env():
    return gym.make(ENV_ID, data_dir=str(DATA))


def _task(task_id: str, data_dir: Path | str = DATA) -> Task:
    return tau2.by_id(task_id, {"data_dir": str(data_dir)})


def _play(env, task_id: str, actions: list[str]) -> tuple[float, dict, list[tuple[str, str]]]:
    """Reset to ``task_id`` and play ``actions`` (then goodbyes) to the end.

    Returns the return, the last info and (agent message, user reply) pairs.
    """
    env.reset(options={"task_id": task_id})
    total = 0.0
    dialog: list[tuple[str, str]] = []
    for action in [*actions, *[say(GOODBYE)] * 3]:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        if parse_action(action).kind == "message":
            dialog.append((action, info["messages"][-1]["content"]))
        if terminated or truncated:
            return total, info, dialog
    raise AssertionError(f"task {task_id}: the episode did not end after a goodbye")


def _reply_to(dialog: list[tuple[str, str]], message: str) -> str:
    for said, reply in dialog:
        if said == message:
            return reply
    raise AssertionError(f"{message!r} was never said; dialog: {dialog}")


def _oracle_plan(task: Task) -> list[str]:
    return OraclePolicy().make_plan(task)


def _write_index(plan: list[str], call: Call) -> int:
    """Position of ``call`` in the plan (the oracle proposes it at index - 1)."""
    for j, action in enumerate(plan):
        p = parse_action(action)
        if p.kind == "tool" and Call(p.name, p.arguments).key == call.key:
            return j
    raise AssertionError(f"gold write {call} not found in the oracle plan")


def _proposal(call: Call) -> str:
    return say(f"To confirm, I will {tau2.describe_call(call)}. Shall I proceed?")


def _fresh_db(task: Task) -> Database:
    return Database({name: Table(records) for name, records in task.tables.items()})


def _apply(db: Database, calls: list[Call]) -> list[bool]:
    ok = []
    for c in calls:
        try:
            RETAIL_TOOLS[c.name].fn(db, **c.arguments)
            ok.append(True)
        except ToolError:
            ok.append(False)
    return ok


# -- mutations of gold writes -------------------------------------------------------------
def _other_variant(products: dict, product_id: str, avoid: set[str]) -> str | None:
    """Another variant id of the product, available ones first."""
    variants = products[product_id]["variants"]
    options = [v for v in variants if v not in avoid]
    options.sort(key=lambda v: (not variants[v]["available"], v))
    return options[0] if options else None


def _mutate_item(task: Task, call: Call) -> Call | None:
    args = dict(call.arguments)
    if "item_ids" not in args:
        return None
    order = task.tables["orders"][args["order_id"]]
    product_of = {it["item_id"]: it["product_id"] for it in order["items"]}
    products = task.tables["products"]
    old = args["item_ids"][0]
    if "new_item_ids" in args:
        new = list(args["new_item_ids"])
        alt = _other_variant(products, product_of[old], {old, *new})
        if alt is None:  # no third variant: swap which old item is exchanged
            others = [i for i in product_of if i not in args["item_ids"]]
            if not others:
                return None
            args["item_ids"] = [others[0], *args["item_ids"][1:]]
        else:
            new[0] = alt
            args["new_item_ids"] = new
    else:  # return: another item of the order, else another variant of the same product
        others = [i for i in product_of if i not in args["item_ids"]]
        alt = others[0] if others else _other_variant(products, product_of[old], {old})
        if alt is None:
            return None
        args["item_ids"] = [alt, *args["item_ids"][1:]]
    return Call(call.name, args)


def _mutate_reason(task: Task, call: Call) -> Call | None:
    if call.name != "cancel_pending_order":
        return None
    other = next(r for r in CANCEL_REASONS if r != call.arguments["reason"])
    return Call(call.name, {**call.arguments, "reason": other})


def _omission_matters(task: Task, index: int) -> bool:
    """Whether leaving gold write ``index`` out changes the gold database at all."""
    gold, without = _fresh_db(task), _fresh_db(task)
    _apply(gold, task.gold_calls)
    _apply(without, [c for i, c in enumerate(task.gold_calls) if i != index])
    return bool(diff_keys(gold, without))


def _mutations(task: Task) -> list[tuple[str, int, Call | None]]:
    """(kind, gold write index, mutated call or None for an omission) for every write it applies to."""
    out = []
    for i, call in enumerate(task.gold_calls):
        for kind, mutate in (("item_id", _mutate_item), ("cancel_reason", _mutate_reason)):
            mutated = mutate(task, call)
            if mutated is not None:
                out.append((kind, i, mutated))
        if _omission_matters(task, i):
            out.append(("omit", i, None))
    return out


def _mutated_plan(task: Task, index: int, mutated: Call | None) -> tuple[list[str], str | None]:
    """The oracle plan with gold write ``index`` replaced (proposal and call) or dropped."""
    plan = _oracle_plan(task)
    j = _write_index(plan, task.gold_calls[index])
    if mutated is None:
        return plan[: j - 1] + plan[j + 2 :], None
    proposal = _proposal(mutated)
    plan[j - 1] = proposal
    plan[j] = tool_call(mutated.name, **mutated.arguments)
    return plan, proposal


# -- the oracle ---------------------------------------------------------------------------
def test_tasks_json_has_the_train_split():
    assert len(TASK_IDS) == 74, f"expected the 74 train tasks, found {len(TASK_IDS)}"


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_oracle_solves_every_train_task(env, task_id):
    oracle = OraclePolicy()
    obs, info = env.reset(options={"task_id": task_id})
    assert info["task_id"] == task_id
    oracle.reset(env)
    total = 0.0
    for _ in range(env.unwrapped.trace_spec.max_turns):
        obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
        total += reward
        if terminated or truncated:
            break
    assert terminated, f"task {task_id}: the oracle's episode ended by {info.get('ended_by')!r}"
    assert total == 1.0 and info["success"] is True, (
        f"task {task_id}: oracle return {total}, db_diff {info['db_diff']}, components {info['return_components']}"
    )
    assert info["db_diff"] == {}


def test_reset_seed_plays_task_seed_mod_74(env):
    for seed in (0, 5, 74, 75 + 73):
        _, info = env.reset(seed=seed)
        assert info["task_id"] == TASK_IDS[seed % len(TASK_IDS)]


# -- mutated gold writes score 0 ----------------------------------------------------------
@pytest.mark.parametrize("task_id", WRITE_TASK_IDS)
def test_mutated_gold_write_scores_zero(env, task_id):
    task = _task(task_id)
    if not task.gold_calls:
        pytest.skip(f"task {task_id}: its only gold write is refused by the tools, so the DB rule ignores it")
    muts = _mutations(task)
    assert muts, f"task {task_id}: no mutation applies to gold writes {task.gold_calls}"
    for kind, index, mutated in muts:
        plan, proposal = _mutated_plan(task, index, mutated)
        total, info, dialog = _play(env, task_id, plan)
        where = f"task {task_id}, {kind} on gold write {index} ({task.gold_calls[index].name}) -> {mutated}"
        assert total == 0.0 and info["success"] is False, (
            f"{where}: expected return 0, got {total}; db_diff {info['db_diff']}"
        )
        assert info["db_diff"], f"{where}: the DB matched the gold DB"
        if proposal is not None:
            reply = _reply_to(dialog, proposal)
            assert reply.startswith("No"), f"{where}: the user confirmed a proposal of a non-gold write: {reply!r}"


def test_each_mutation_kind_applies_to_several_tasks():
    applied: dict[str, set[str]] = {"item_id": set(), "cancel_reason": set(), "omit": set()}
    succeeded_items = 0  # mutated item writes the tools accept: the DB comparison, not an error, must catch them
    for tid in WRITE_TASK_IDS:
        task = _task(tid)
        for kind, index, mutated in _mutations(task):
            applied[kind].add(tid)
            if kind == "item_id":
                db = _fresh_db(task)
                _apply(db, task.gold_calls[:index])
                succeeded_items += _apply(db, [mutated])[0]
    counts = {k: len(v) for k, v in applied.items()}
    assert all(n >= 3 for n in counts.values()), f"mutation kinds applied to too few tasks: {counts}"
    assert succeeded_items >= 3, f"only {succeeded_items} item-id mutations are valid writes"


# -- unconfirmed and violating writes ---------------------------------------------------------
def _pending_order_of_someone_else(task: Task) -> str:
    targets = {r.target for r in task.requests}
    for oid, order in task.tables["orders"].items():
        if order["status"] == "pending" and order["user_id"] != task.user.user_id and oid not in targets:
            return oid
    raise AssertionError("no pending order of another user in db.json")


def test_cancelling_another_users_order_is_a_violation(env):
    task = _task("0")
    other = _pending_order_of_someone_else(task)
    plan = _oracle_plan(task)
    proposal = say(f"To confirm, I will cancel order {other} with reason: no longer needed. Shall I proceed?")
    rogue = tool_call("cancel_pending_order", order_id=other, reason="no longer needed")
    plan[2:2] = [proposal, rogue]  # after asking for identity and authenticating
    total, info, dialog = _play(env, "0", plan)
    assert _reply_to(dialog, proposal).startswith("No"), "the user confirmed a write it never asked for"
    assert info["violating_writes"] >= 1, f"annotations: {info}"
    assert info["unconfirmed_writes"] >= 1
    assert info["preconditions_checked"] is False
    assert total == 0.0 and info["success"] is False
    assert other in info["db_diff"].get("orders", []), f"db_diff {info['db_diff']} does not name {other}"


def test_gold_write_without_proposal_is_unconfirmed(env):
    task = _task("0")
    plan = _oracle_plan(task)
    j = _write_index(plan, task.gold_calls[0])
    del plan[j - 1]  # no proposal, no "yes"
    total, info, _ = _play(env, "0", plan)
    assert info["unconfirmed_writes"] >= 1, f"annotations: {info}"
    assert info["violating_writes"] == 0
    # The benchmark's DB rule does not see confirmations: the final DB is the gold one.
    assert total == 1.0 and info["db_diff"] == {}


def test_user_says_no_to_a_proposal_that_is_not_a_gold_write(env):
    task = _task("3")
    gold = task.gold_calls[0]
    wrong = _mutate_item(task, gold)
    assert wrong is not None
    env.reset(options={"task_id": "3"})
    env.step(say(ASK_ID))
    _, _, _, _, info = env.step(_proposal(wrong))
    assert info["messages"][-1]["content"].startswith("No")
    _, _, _, _, info = env.step(_proposal(gold))
    assert info["messages"][-1]["content"].startswith("Yes")


# -- the offline user ---------------------------------------------------------------------
def test_first_person():
    assert tau2.first_person("You want to return your order") == "I want to return my order"
    assert tau2.first_person("your order was late, you are upset") == "my order was late, I am upset"


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_opening_starts_with_hi(env, task_id):
    _, info = env.reset(options={"task_id": task_id})
    opening = info["messages"][1]["content"]
    assert opening.startswith("Hi!"), opening
    reason = RAW_BY_ID[task_id]["user_scenario"]["instructions"]["reason_for_call"]
    assert opening == "Hi! " + tau2.first_person(reason)


def _identity_problem(task_id: str, reply: str, task: Task) -> str | None:
    known = RAW_BY_ID[task_id]["user_scenario"]["instructions"]["known_info"].lower()
    u = task.user
    if "@" in known:
        if not u.email or u.email.lower() not in reply.lower() or u.email.lower() not in known:
            return f"known_info has an email; the user said {reply!r}"
        return None
    if not u.zip or u.zip not in reply or u.zip not in known:
        return f"known_info has a zip code; the user said {reply!r}"
    if u.first_name.lower() not in reply.lower() or u.first_name.lower() not in known:
        return f"known_info has a name; the user said {reply!r}"
    return None


@pytest.mark.parametrize("task_id", [t for t in TASK_IDS if t in WRITE_TASK_IDS])
def test_user_gives_identity_per_known_info(env, task_id):
    task = env.unwrapped.family.by_id(task_id, env.unwrapped.trace_spec.params)
    if not task.requests:
        pytest.skip("no gold write: the conversation ends at the first agent message")
    env.reset(options={"task_id": task_id})
    _, _, terminated, _, info = env.step(say(ASK_ID))
    assert not terminated
    problem = _identity_problem(task_id, info["messages"][-1]["content"], task)
    assert problem is None, f"task {task_id}: {problem}"


def test_user_profile_known_for_every_task():
    # Tasks without gold writes still have a user: known_info names them. A profile the
    # family cannot resolve makes the user say "My email is ." when asked.
    bad = {}
    for tid in TASK_IDS:
        task = _task(tid)
        problem = _identity_problem(tid, ScriptedUser(task).identity(), task)
        if problem:
            bad[tid] = (RAW_BY_ID[tid]["user_scenario"]["instructions"]["known_info"], problem)
    assert not bad, (
        "the scripted user's identity does not follow known_info (trace_envs/tasks/tau2.py "
        f"_user_of / the UserProfile built in _convert) for tasks {sorted(bad)}: {bad}"
    )


def test_both_identity_kinds_occur():
    kinds = {_task(t).user.auth for t in WRITE_TASK_IDS}
    assert kinds == {"email", "name_zip"}


# -- NL_ASSERTION and COMMUNICATE ---------------------------------------------------------------
def test_nl_assertion_reported_not_evaluated(env):
    tid = next(t for t in WRITE_TASK_IDS if "NL_ASSERTION" in RAW_BY_ID[t]["evaluation_criteria"]["reward_basis"])
    total, info, _ = _play(env, tid, _oracle_plan(_task(tid)))
    assert total == 1.0
    assert "NL_ASSERTION" in info["reward_basis"]
    assert info["nl_assertions"]["evaluated"] is False
    assert not any("nl" in k.lower() for k in info["return_components"]), info["return_components"]


def test_nl_assertion_reported_for_every_task(env):
    # Every task whose reward basis lists NL_ASSERTION must say so in the final info,
    # including tasks whose gold has no actions at all.
    missing = []
    for tid in TASK_IDS:
        basis = RAW_BY_ID[tid]["evaluation_criteria"]["reward_basis"]
        _, info, _ = _play(env, tid, _oracle_plan(_task(tid)))
        if "NL_ASSERTION" in basis and (
            info.get("nl_assertions", {}).get("evaluated") is not False or info.get("reward_basis") != basis
        ):
            missing.append(tid)
    assert not missing, (
        f"tasks {missing}: the final info lacks reward_basis / nl_assertions "
        "(trace_envs/reward.py annotate adds them only when task.gold_actions is non-empty)"
    )


def _communicate_tasks() -> list[str]:
    """Tasks with communicate_info and gold writes (see the no-write test below for the others)."""
    return [
        t for t in WRITE_TASK_IDS if RAW_BY_ID[t]["evaluation_criteria"].get("communicate_info") and _task(t).gold_calls
    ]


def _without_communication(task: Task) -> list[str]:
    return [a for a in _oracle_plan(task) if not a.startswith("Here is the information")]


def test_oracle_communicates_info(env):
    tids = _communicate_tasks()
    assert len(tids) >= 3
    for tid in tids:
        task = _task(tid)
        total, info, _ = _play(env, tid, _oracle_plan(task))
        assert total == 1.0, tid
        assert info["communicate_info"] == {s: True for s in task.communicate}, (tid, info["communicate_info"])


def _said_by_chance(task: Task, plan: list[str]) -> bool:
    """Whether a communicate string occurs in another message anyway (e.g. "10" in an item id)."""
    said = " ".join(a.lower().replace(",", "") for a in plan if parse_action(a).kind == "message")
    return any(s.lower().replace(",", "") in said for s in task.communicate)


def test_silent_agent_keeps_db_reward_without_communicate_basis(env):
    checked = 0
    for tid in _communicate_tasks():
        task = _task(tid)
        assert "COMMUNICATE" not in task.reward_basis
        plan = _without_communication(task)
        if _said_by_chance(task, plan):
            continue
        total, info, _ = _play(env, tid, plan)
        assert total == 1.0 and info["success"] is True, (tid, info["db_diff"])
        assert info["communicate_info"] == {s: False for s in task.communicate}, (tid, info["communicate_info"])
        checked += 1
    assert checked >= 3, f"only {checked} tasks checked"


def test_agent_can_communicate_in_a_task_without_writes(env):
    # Task 67 (train) has communicate_info ["829.43"] and no gold write. The scripted user
    # must let the agent speak: today it ends the conversation at the first agent message
    # (no request left), so no agent can ever communicate anything in such a task, and a
    # COMMUNICATE-basis task without writes would score 0 for every agent.
    tids = [
        t for t in TASK_IDS if RAW_BY_ID[t]["evaluation_criteria"].get("communicate_info") and not _task(t).gold_calls
    ]
    assert tids, "no train task with communicate_info and no gold write"
    bad = {}
    for tid in tids:
        task = _task(tid)
        _, info, dialog = _play(env, tid, _oracle_plan(task))
        if info.get("communicate_info") != {s: True for s in task.communicate}:
            bad[tid] = {"communicate_info": info.get("communicate_info"), "turns": info["step"], "dialog": dialog[:2]}
    assert not bad, f"the oracle could not communicate the required strings: {bad}"


def _data_dir_with(tmp_path: Path, tasks: list[dict]) -> Path:
    retail = tau2.resolve_data_dir(DATA)
    out = tmp_path / "tau2" / "domains" / "retail"
    out.mkdir(parents=True)
    (out / "db.json").symlink_to(retail / "db.json")
    (out / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    return tmp_path / "tau2"


def test_communicate_basis_scores_zero_when_unsaid(tmp_path):
    tid = next(t for t in _communicate_tasks() if not _said_by_chance(_task(t), _without_communication(_task(t))))
    raw = json.loads(json.dumps(RAW_BY_ID[tid]))
    raw["evaluation_criteria"]["reward_basis"] = ["DB", "COMMUNICATE"]
    root = _data_dir_with(tmp_path, [raw])
    env = gym.make(ENV_ID, data_dir=str(root))
    task = _task(tid, root)
    assert task.reward_basis == ("DB", "COMMUNICATE")

    total, info, _ = _play(env, tid, _oracle_plan(task))
    assert total == 1.0 and info["success"] is True, info["communicate_info"]

    total, info, _ = _play(env, tid, _without_communication(task))
    assert info["db_diff"] == {}, "the DB part must still match"
    assert info["communicate_info"] == {s: False for s in task.communicate}
    assert total == 0.0 and info["success"] is False


# -- data errors ----------------------------------------------------------------------------
def test_missing_data_dir_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)
    with pytest.raises(SpecError) as err:
        gym.make(ENV_ID).reset(seed=0)
    assert "TAU2_DATA_DIR" in str(err.value) and "data_dir" in str(err.value)


def test_bad_data_dir_is_named(tmp_path):
    bad = tmp_path / "no-tau2-here"
    bad.mkdir()
    with pytest.raises(SpecError) as err:
        gym.make(ENV_ID, data_dir=str(bad)).reset(seed=0)
    assert str(bad) in str(err.value)
    assert "TAU2_DATA_DIR" in str(err.value) or "data_dir" in str(err.value)


def test_data_dir_may_be_the_retail_dir_itself(monkeypatch):
    retail = tau2.resolve_data_dir(DATA)
    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)
    for where in (retail, retail.parent.parent):
        env = gym.make(ENV_ID, data_dir=str(where))
        _, info = env.reset(options={"task_id": TASK_IDS[1]})
        assert info["task_id"] == TASK_IDS[1]
        _, info = env.reset(seed=0)
        assert info["task_id"] == TASK_IDS[0]


def test_unknown_task_id_lists_close_ids(env):
    with pytest.raises(ValueError) as err:
        env.reset(options={"task_id": "1000"})
    msg = str(err.value)
    assert "1000" in msg and "close ids" in msg and "'10'" in msg, msg


# -- initial_state --------------------------------------------------------------------------
def test_initial_state_patch_applies_and_does_not_leak(tmp_path):
    base = RAW_BY_ID["0"]
    order_id = next(
        a["arguments"]["order_id"] for a in base["evaluation_criteria"]["actions"] if a["name"] == "get_order_details"
    )
    patched = json.loads(json.dumps(base))
    patched["id"] = "patched"
    patched["initial_state"] = {
        "initialization_data": {
            "agent_data": {"orders": {order_id: {"address": {"city": "Patchville"}}}},
            "user_data": None,
        },
        "initialization_actions": None,
        "message_history": None,
    }
    plain = json.loads(json.dumps(base))
    plain["id"] = "plain"
    root = _data_dir_with(tmp_path, [patched, plain])
    env = gym.make(ENV_ID, data_dir=str(root))
    shared = tau2.load(tau2.resolve_data_dir(root)).tables["orders"][order_id]
    original = json.loads(json.dumps(shared))
    assert original["address"]["city"] != "Patchville"

    def order_seen(task_id: str) -> dict:
        env.reset(options={"task_id": task_id})
        _, _, _, _, info = env.step(tool_call("get_order_details", order_id=order_id))
        return json.loads(info["messages"][-1]["content"])

    seen = order_seen("patched")
    assert seen["address"]["city"] == "Patchville"
    assert seen["address"]["address1"] == original["address"]["address1"], "the patch is merged, not replaced"
    assert order_seen("plain")["address"] == original["address"], "the patch leaked into another task"
    assert shared == original, "the patch mutated the shared base tables"
    # Gold scoring starts from the patched state: the oracle still scores 1.
    total, info, _ = _play(env, "patched", _oracle_plan(_task("patched", root)))
    assert total == 1.0, info["db_diff"]
    assert order_seen("plain")["address"] == original["address"]


@pytest.mark.parametrize(
    ("db", "tasks", "file", "says"),
    [
        ("{bad", "[]", "db.json", "cannot read it as JSON"),
        ("{}", "[]", "db.json", "missing or not objects: users, orders, products"),
        ('{"users": {}, "orders": {}, "products": {}}', '{"x": 1}', "tasks.json", "it is not a list"),
        ('{"users": {}, "orders": {}, "products": {}}', '[{"id": 1}, {"no": 2}]', "tasks.json", "item 1 is not"),
    ],
)
def test_malformed_data_is_a_spec_error_naming_the_file(tmp_path, db, tasks, file, says):
    (tmp_path / "db.json").write_text(db)
    (tmp_path / "tasks.json").write_text(tasks)
    with pytest.raises(SpecError, match=says) as info:  # raw JSONDecodeError, TypeError or KeyError before
        gym.make("trace/tau2-retail-v0", data_dir=tmp_path).reset(seed=0)  # a Path is taken like a str
    assert str(tmp_path.resolve() / file) in str(info.value)


@pytest.mark.skipif(not HAVE_TAU2, reason=TAU2_MISSING)
def test_data_dir_may_be_a_path():
    obs, _ = gym.make("trace/tau2-retail-v0", data_dir=TAU2_DIR).reset(seed=0)
    assert obs
