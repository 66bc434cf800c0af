"""trace/tau2-retail-v0: the real τ²-bench retail train tasks, scored offline.

Covers: the oracle solves all 74 tasks; a mutated or omitted gold write scores 0; writes
without confirmation or on other users' records show in the annotations; the offline
user; NL_ASSERTION / COMMUNICATE reporting; data-directory errors; initial_state.
Pickling, deepcopy and check_env are covered registry-wide (test_registry.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

from trace_envs import OraclePolicy, SpecError, parse_action, say, tool_call
from trace_envs.db import Database, Table, diff_keys
from trace_envs.domains.retail.tools import CANCEL_REASONS, RETAIL_TOOLS
from trace_envs.errors import ToolError
from trace_envs.tasks import tau2
from trace_envs.tasks.base import Call, Task
from trace_envs.user import ScriptedUser

# Every test here needs the data: without it they skip, saying how to get it. Tests taking
# ``tau2_task_id`` (every train task) or ``tau2_write_task_id`` (those with a gold write) are
# parametrized by tests/conftest.py.
pytestmark = pytest.mark.usefixtures("tau2_dir")

ENV_ID = "trace/tau2-retail-v0"
GOODBYE = "Thank you for contacting us. Have a great day, goodbye!"
ASK_ID = "Before I can help, please tell me your email address, or your name and zip code, to verify your identity."


class Data:
    """The τ²-bench retail train tasks in ``root``: raw JSON by id, the ids, and tasks built from them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        raw = json.loads((tau2.resolve_data_dir(root) / "tasks.json").read_text(encoding="utf-8"))
        self.raw = {str(t["id"]): t for t in raw}
        self.ids = list(self.raw)
        self.write_ids = [
            tid
            for tid, t in self.raw.items()
            if any(a["name"] in tau2.WRITE_TOOLS for a in t["evaluation_criteria"]["actions"])
        ]

    def task(self, task_id: str, data_dir: Path | str | None = None) -> Task:
        """Task ``task_id`` as the family builds it, from ``data_dir`` (default: this data)."""
        return tau2.by_id(task_id, {"data_dir": str(data_dir or self.root)})


# -- helpers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tau2_dir: Path) -> Data:
    """The train tasks of the τ²-bench data this session uses."""
    return Data(tau2_dir)


@pytest.fixture(scope="module")
def env(tau2_dir: Path):
    """trace/tau2-retail-v0 on that data, shared by the module's tests."""
    return gym.make(ENV_ID, data_dir=str(tau2_dir))


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
def test_tasks_json_has_the_train_split(data):
    assert len(data.ids) == 74, f"expected the 74 train tasks, found {len(data.ids)}"


def test_oracle_solves_every_train_task(env, tau2_task_id):
    oracle = OraclePolicy()
    obs, info = env.reset(options={"task_id": tau2_task_id})
    assert info["task_id"] == tau2_task_id
    oracle.reset(env)
    total = 0.0
    for _ in range(env.unwrapped.trace_spec.max_turns):
        obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
        total += reward
        if terminated or truncated:
            break
    assert terminated, f"task {tau2_task_id}: the oracle's episode ended by {info.get('ended_by')!r}"
    assert total == 1.0 and info["success"] is True, (
        f"task {tau2_task_id}: oracle return {total}, db_diff {info['db_diff']}, components {info['return_components']}"
    )
    assert info["db_diff"] == {}


def test_reset_seed_plays_task_seed_mod_74(env, data):
    for seed in (0, 5, 74, 75 + 73):
        _, info = env.reset(seed=seed)
        assert info["task_id"] == data.ids[seed % len(data.ids)]


# -- mutated gold writes score 0 ----------------------------------------------------------
def test_mutated_gold_write_scores_zero(env, data, tau2_write_task_id):
    task = data.task(tau2_write_task_id)
    if not task.gold_calls:
        pytest.skip(
            f"task {tau2_write_task_id}: its only gold write is refused by the tools, so the DB rule ignores it"
        )
    muts = _mutations(task)
    assert muts, f"task {tau2_write_task_id}: no mutation applies to gold writes {task.gold_calls}"
    for kind, index, mutated in muts:
        plan, proposal = _mutated_plan(task, index, mutated)
        total, info, dialog = _play(env, tau2_write_task_id, plan)
        where = f"task {tau2_write_task_id}, {kind} on gold write {index} ({task.gold_calls[index].name}) -> {mutated}"
        assert total == 0.0 and info["success"] is False, (
            f"{where}: expected return 0, got {total}; db_diff {info['db_diff']}"
        )
        assert info["db_diff"], f"{where}: the DB matched the gold DB"
        if proposal is not None:
            reply = _reply_to(dialog, proposal)
            assert reply.startswith("No"), f"{where}: the user confirmed a proposal of a non-gold write: {reply!r}"


def test_each_mutation_kind_applies_to_several_tasks(data):
    applied: dict[str, set[str]] = {"item_id": set(), "cancel_reason": set(), "omit": set()}
    succeeded_items = 0  # mutated item writes the tools accept: the DB comparison, not an error, must catch them
    for tid in data.write_ids:
        task = data.task(tid)
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


def test_cancelling_another_users_order_is_a_violation(env, data):
    task = data.task("0")
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


def test_gold_write_without_proposal_is_unconfirmed(env, data):
    task = data.task("0")
    plan = _oracle_plan(task)
    j = _write_index(plan, task.gold_calls[0])
    del plan[j - 1]  # no proposal, no "yes"
    total, info, _ = _play(env, "0", plan)
    assert info["unconfirmed_writes"] >= 1, f"annotations: {info}"
    assert info["violating_writes"] == 0
    # The benchmark's DB rule does not see confirmations: the final DB is the gold one.
    assert total == 1.0 and info["db_diff"] == {}


def test_user_says_no_to_a_proposal_that_is_not_a_gold_write(env, data):
    task = data.task("3")
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


def test_opening_starts_with_hi(env, data, tau2_task_id):
    _, info = env.reset(options={"task_id": tau2_task_id})
    opening = info["messages"][1]["content"]
    assert opening.startswith("Hi!"), opening
    reason = data.raw[tau2_task_id]["user_scenario"]["instructions"]["reason_for_call"]
    assert opening == "Hi! " + tau2.first_person(reason)


def _identity_problem(data: Data, task_id: str, reply: str, task: Task) -> str | None:
    known = data.raw[task_id]["user_scenario"]["instructions"]["known_info"].lower()
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


def test_user_gives_identity_per_known_info(env, data, tau2_write_task_id):
    task = env.unwrapped.family.by_id(tau2_write_task_id, env.unwrapped.trace_spec.params)
    if not task.requests:
        pytest.skip("no gold write: the conversation ends at the first agent message")
    env.reset(options={"task_id": tau2_write_task_id})
    _, _, terminated, _, info = env.step(say(ASK_ID))
    assert not terminated
    problem = _identity_problem(data, tau2_write_task_id, info["messages"][-1]["content"], task)
    assert problem is None, f"task {tau2_write_task_id}: {problem}"


def test_user_profile_known_for_every_task(data):
    # Tasks without gold writes still have a user: known_info names them. A profile the
    # family cannot resolve makes the user say "My email is ." when asked.
    bad = {}
    for tid in data.ids:
        task = data.task(tid)
        problem = _identity_problem(data, tid, ScriptedUser(task).identity(), task)
        if problem:
            bad[tid] = (data.raw[tid]["user_scenario"]["instructions"]["known_info"], problem)
    assert not bad, (
        "the scripted user's identity does not follow known_info (trace_envs/tasks/tau2.py "
        f"_user_of / the UserProfile built in _convert) for tasks {sorted(bad)}: {bad}"
    )


def test_both_identity_kinds_occur(data):
    kinds = {data.task(t).user.auth for t in data.write_ids}
    assert kinds == {"email", "name_zip"}


# -- NL_ASSERTION and COMMUNICATE ---------------------------------------------------------------
def test_nl_assertion_reported_not_evaluated(env, data):
    tid = next(t for t in data.write_ids if "NL_ASSERTION" in data.raw[t]["evaluation_criteria"]["reward_basis"])
    total, info, _ = _play(env, tid, _oracle_plan(data.task(tid)))
    assert total == 1.0
    assert "NL_ASSERTION" in info["reward_basis"]
    assert info["nl_assertions"]["evaluated"] is False
    assert not any("nl" in k.lower() for k in info["return_components"]), info["return_components"]


def test_nl_assertion_reported_for_every_task(env, data):
    # Every task whose reward basis lists NL_ASSERTION must say so in the final info,
    # including tasks whose gold has no actions at all.
    missing = []
    for tid in data.ids:
        basis = data.raw[tid]["evaluation_criteria"]["reward_basis"]
        _, info, _ = _play(env, tid, _oracle_plan(data.task(tid)))
        if "NL_ASSERTION" in basis and (
            info.get("nl_assertions", {}).get("evaluated") is not False or info.get("reward_basis") != basis
        ):
            missing.append(tid)
    assert not missing, (
        f"tasks {missing}: the final info lacks reward_basis / nl_assertions "
        "(trace_envs/reward.py annotate adds them only when task.gold_actions is non-empty)"
    )


def _communicate_tasks(data: Data) -> list[str]:
    """Tasks with communicate_info and gold writes (see the no-write test below for the others)."""
    return [
        t
        for t in data.write_ids
        if data.raw[t]["evaluation_criteria"].get("communicate_info") and data.task(t).gold_calls
    ]


def _without_communication(task: Task) -> list[str]:
    return [a for a in _oracle_plan(task) if not a.startswith("Here is the information")]


def test_oracle_communicates_info(env, data):
    tids = _communicate_tasks(data)
    assert len(tids) >= 3
    for tid in tids:
        task = data.task(tid)
        total, info, _ = _play(env, tid, _oracle_plan(task))
        assert total == 1.0, tid
        assert info["communicate_info"] == {s: True for s in task.communicate}, (tid, info["communicate_info"])


def _said_by_chance(task: Task, plan: list[str]) -> bool:
    """Whether a communicate string occurs in another message anyway (e.g. "10" in an item id)."""
    said = " ".join(a.lower().replace(",", "") for a in plan if parse_action(a).kind == "message")
    return any(s.lower().replace(",", "") in said for s in task.communicate)


def test_silent_agent_keeps_db_reward_without_communicate_basis(env, data):
    checked = 0
    for tid in _communicate_tasks(data):
        task = data.task(tid)
        assert "COMMUNICATE" not in task.reward_basis
        plan = _without_communication(task)
        if _said_by_chance(task, plan):
            continue
        total, info, _ = _play(env, tid, plan)
        assert total == 1.0 and info["success"] is True, (tid, info["db_diff"])
        assert info["communicate_info"] == {s: False for s in task.communicate}, (tid, info["communicate_info"])
        checked += 1
    assert checked >= 3, f"only {checked} tasks checked"


def test_agent_can_communicate_in_a_task_without_writes(env, data):
    # Task 67 (train) has communicate_info ["829.43"] and no gold write. The scripted user
    # must let the agent speak: today it ends the conversation at the first agent message
    # (no request left), so no agent can ever communicate anything in such a task, and a
    # COMMUNICATE-basis task without writes would score 0 for every agent.
    tids = [
        t
        for t in data.ids
        if data.raw[t]["evaluation_criteria"].get("communicate_info") and not data.task(t).gold_calls
    ]
    assert tids, "no train task with communicate_info and no gold write"
    bad = {}
    for tid in tids:
        task = data.task(tid)
        _, info, dialog = _play(env, tid, _oracle_plan(task))
        if info.get("communicate_info") != {s: True for s in task.communicate}:
            bad[tid] = {"communicate_info": info.get("communicate_info"), "turns": info["step"], "dialog": dialog[:2]}
    assert not bad, f"the oracle could not communicate the required strings: {bad}"


def _data_dir_with(data: Data, tmp_path: Path, tasks: list[dict]) -> Path:
    retail = tau2.resolve_data_dir(data.root)
    out = tmp_path / "tau2" / "domains" / "retail"
    out.mkdir(parents=True)
    (out / "db.json").symlink_to(retail / "db.json")
    (out / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    return tmp_path / "tau2"


def test_communicate_basis_scores_zero_when_unsaid(data, tmp_path):
    tid = next(
        t for t in _communicate_tasks(data) if not _said_by_chance(data.task(t), _without_communication(data.task(t)))
    )
    raw = json.loads(json.dumps(data.raw[tid]))
    raw["evaluation_criteria"]["reward_basis"] = ["DB", "COMMUNICATE"]
    root = _data_dir_with(data, tmp_path, [raw])
    env = gym.make(ENV_ID, data_dir=str(root))
    task = data.task(tid, root)
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


def test_data_dir_may_be_the_retail_dir_itself(data, monkeypatch):
    retail = tau2.resolve_data_dir(data.root)
    monkeypatch.delenv("TAU2_DATA_DIR", raising=False)
    for where in (retail, retail.parent.parent):
        env = gym.make(ENV_ID, data_dir=str(where))
        _, info = env.reset(options={"task_id": data.ids[1]})
        assert info["task_id"] == data.ids[1]
        _, info = env.reset(seed=0)
        assert info["task_id"] == data.ids[0]


def test_unknown_task_id_lists_close_ids(env):
    with pytest.raises(ValueError) as err:
        env.reset(options={"task_id": "1000"})
    msg = str(err.value)
    assert "1000" in msg and "close ids" in msg and "'10'" in msg, msg


# -- initial_state --------------------------------------------------------------------------
def test_initial_state_patch_applies_and_does_not_leak(data, tmp_path):
    base = data.raw["0"]
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
    root = _data_dir_with(data, tmp_path, [patched, plain])
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
    total, info, _ = _play(env, "patched", _oracle_plan(data.task("patched", root)))
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


def test_data_dir_may_be_a_path(tau2_dir: Path):
    obs, _ = gym.make("trace/tau2-retail-v0", data_dir=tau2_dir).reset(seed=0)
    assert obs
