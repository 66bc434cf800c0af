"""Admissible actions: complete for the oracle, bounded, deterministic, and only from what was shown."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hypothesis import given, settings

from trace_envs import OraclePolicy, TraceEnv, say, tool_call
from trace_envs.admissible import MESSAGES, AdmissibleActions, admissible_actions
from trace_envs.testing import admissible_coverage, check_admissible_actions, specs

SYNTHETIC = [
    "trace/precondition-v0",
    "trace/structured-data-v0",
    "trace/tool-calling-v0",
    "trace/multi-step-v0",
    "trace/retail-v0",
]


@pytest.mark.parametrize("env_id", SYNTHETIC)
def test_the_oracle_acts_within_the_list_on_100_seeds(env_id: str) -> None:
    cover = admissible_coverage(gym.make(env_id), range(100))
    assert cover["missed"] == 0, cover["examples"]
    assert cover["size_p90"] <= 64 and cover["size_max"] <= 128, cover


def test_listed_actions_are_accepted_deterministic_bounded_and_observed(registered_id: str) -> None:
    assert check_admissible_actions(gym.make(registered_id), episodes=8)["steps"] > 8


@settings(max_examples=10, deadline=None)
@given(spec=specs())
def test_lists_hold_on_specs_drawn_by_the_test_kit(spec: dict) -> None:
    check_admissible_actions(TraceEnv(spec), episodes=2, max_actions=16)


def test_the_env_puts_the_list_in_info_only_when_asked() -> None:
    env = gym.make("trace/precondition-v0", admissible_actions=True)
    obs, info = env.reset(seed=0)
    assert info["admissible_actions"][0] == say(MESSAGES[0])  # first, ask who the customer is
    assert info["admissible_actions"] == admissible_actions(info["messages"], info["tools"])
    *_, info = env.step(info["admissible_actions"][0])
    assert info["admissible_actions"] == admissible_actions(info["messages"], info["tools"])
    *_, info = env.step(say("Goodbye!"))
    assert info["admissible_actions"] == []  # the episode is over
    _, info = gym.make("trace/precondition-v0").reset(seed=0)
    assert "admissible_actions" not in info


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"admissible_actions": "yes"}, "admissible_actions must be a bool"),
        ({"admissible_actions": True, "max_actions": 3}, "max_actions must be"),
        ({"admissible_actions": True, "near_misses": 1}, "near_misses must be"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("trace/precondition-v0", **kwargs)


def test_a_write_is_listed_only_after_the_customer_accepted_it() -> None:
    env = gym.make("trace/precondition-v0", admissible_actions=True, n_requests=1, refuse_rate=0.0)
    obs, info = env.reset(seed=3)
    oracle = OraclePolicy()
    oracle.reset(env)
    writes = {
        "cancel_pending_order",
        "modify_pending_order_address",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
        "modify_pending_order_items",
        "modify_user_address",
    }
    saw_write = False
    while True:
        listed = [a for a in info["admissible_actions"] if any(f'"name": "{w}"' in a for w in writes)]
        last = info["messages"][-1]
        if listed:
            assert last["role"] == "user" and last["content"].startswith("Yes"), last
            saw_write = True
        obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
        if terminated or truncated:
            break
    assert saw_write and info["success"]


def test_near_miss_twins_hold_the_typical_mistakes() -> None:
    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "Please ship my order #W1234567 to 12 Oak Street, Austin, TX, 78701, USA instead."},
        {
            "role": "assistant",
            "content": "To confirm, I will change the shipping address of order #W1234567 to "
            "12 Oak Street, Austin, TX, 78701, USA. Shall I proceed?",
        },
        {"role": "user", "content": "Yes, please go ahead."},
    ]
    tools = gym.make("trace/precondition-v0").unwrapped.tool_schemas
    right = tool_call(
        "modify_pending_order_address",
        order_id="#W1234567",
        address1="12 Oak Street",
        address2="",
        city="Austin",
        country="USA",
        state="TX",
        zip="78701",
    )
    plain = admissible_actions(messages, tools)
    assert right in plain
    twins = set(admissible_actions(messages, tools, near_misses=True)) - set(plain)
    assert (
        tool_call(
            "modify_pending_order_address",
            order_id="W1234567",
            address1="12 Oak Street",
            address2="",
            city="Austin",
            country="USA",
            state="TX",
            zip="78701",
        )
        in twins
    )  # no '#'
    assert (
        tool_call(
            "modify_pending_order_address",
            order_id="#W1234567",
            address1="12 Oak Street",
            address2="",
            city="Austin",
            country="USA",
            state="TX",
            zip=78701,
        )
        in twins
    )  # a number for the zip
    assert tool_call("get_order_details", order_id="W1234567") in twins


def test_the_cap_cuts_from_the_last_group_and_keeps_the_messages() -> None:
    env = gym.make("trace/multi-step-v0")
    obs, info = env.reset(seed=0)
    oracle = OraclePolicy()
    oracle.reset(env)
    lists = AdmissibleActions(info["tools"])
    for _ in range(6):
        obs, *_, info = env.step(oracle.act(obs, info))
    full = lists.update(info["messages"])
    small = admissible_actions(info["messages"], info["tools"], max_actions=8)
    assert small == full[:8] and len(full) > 8


def test_incremental_updates_match_a_fresh_build_and_survive_pickling() -> None:
    import pickle

    env = gym.make("trace/retail-v0", admissible_actions=True)
    obs, info = env.reset(seed=5)
    oracle = OraclePolicy()
    oracle.reset(env)
    for _ in range(5):
        obs, *_, info = env.step(oracle.act(obs, info))
    copy = pickle.loads(pickle.dumps(env))
    action = oracle.act(obs, info)
    a = env.step(action)[-1]["admissible_actions"]
    b = copy.step(action)[-1]["admissible_actions"]
    assert a == b == admissible_actions(env.unwrapped.messages, info["tools"])


def test_str_call_writes_the_same_text_as_tool_call() -> None:
    from trace_envs.admissible import _str_call

    texts = [
        "",
        "W1234567",
        "#W1",
        "<tool_call>",
        "</tool_call>",
        'a "quoted" \\ path',
        "é中😀",
        "\ud800",
        "\x00\x1f",
        "\u2028",
    ]
    for a in texts:
        for b in texts:
            kwargs = {"x": a, "ids": [a, b], "none": []}
            assert _str_call("get<order>", **kwargs) == tool_call("get<order>", **kwargs)
    for odd in (1, 2.5, True, None, {"a": "b"}, ["a", 1], ("a",)):  # not strings: json.dumps writes them
        assert _str_call("t", a="x", b=odd) == tool_call("t", a="x", b=odd)
    assert _str_call("list_all_product_types") == tool_call("list_all_product_types")


class _Uncached(AdmissibleActions):
    """Forgets every cache before each listing: the groups are rebuilt from scratch whenever the
    cached version would rebuild them."""

    CACHES = (
        "_strings",
        "_read_calls",
        "_product_reads",
        "_items",
        "_catalog_lower",
        "_said_upto",
        "_variants",
        "_products_named",
        "_open",
        "_by_address",
        "_by_order",
        "_order_items",
        "_abouts",
        "_candidates",
        "_refusals",
        "_messages_key",
        "_sentences",
        "_listed",
        "_list",
    )

    def actions(self) -> list[str]:
        fresh = AdmissibleActions([], near_misses=self.near_misses, max_actions=self.max_actions)
        for name in self.CACHES:
            setattr(self, name, getattr(fresh, name))
        return super().actions()


@pytest.mark.parametrize("env_id", SYNTHETIC)
def test_the_caches_never_change_a_list(env_id: str) -> None:
    import random

    env = gym.make(env_id).unwrapped
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        oracle = OraclePolicy()
        oracle.reset(env)
        rng = random.Random(seed)
        listers = [
            (cls(info["tools"], near_misses=nm, max_actions=m))
            for cls in (AdmissibleActions, _Uncached)
            for nm, m in ((False, 128), (True, 128), (True, 8))
        ]
        done = False
        while not done:
            lists = [lister.update(info["messages"]) for lister in listers]
            assert lists[:3] == lists[3:]
            action = oracle.act(obs, info) if seed % 2 == 0 else rng.choice(lists[1])
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated


def test_order_ids_are_found_as_the_documented_pattern_finds_them() -> None:
    import random

    from trace_envs.admissible import _ORDER, _ORDER_ID

    rng = random.Random(0)
    texts = ["order #W1234567, and W7654321.", "#W12345678", "xW1234567", "W1234567#W7654321", "é#W1234567é", ""]
    texts += ["".join(rng.choice("#W0123456789 aZ_é,.-\n") for _ in range(rng.randint(0, 24))) for _ in range(20000)]
    for text in texts:
        assert ["#" + o for o in _ORDER_ID.findall(text)] == ["#" + o.lstrip("#") for o in _ORDER.findall(text)], text


def test_sentences_split_as_the_documented_pattern_splits_them() -> None:
    import random
    import re

    from trace_envs.admissible import _SENTENCE

    plain = re.compile(r"(?<=[.?!;])\s+|\(\d+\)\s*")
    rng = random.Random(0)
    texts = ["yes. (1) the lamp; (2)  the bottle!  ok?", "a.(12)b", "(1). x", "end.", "", " . ( 1) (x) (9)"]
    texts += [
        "".join(rng.choice(" \t\n.?!;()0123456789ab\u2028\xa0é") for _ in range(rng.randint(0, 24)))
        for _ in range(20000)
    ]
    for text in texts:
        assert _SENTENCE.split(text) == plain.split(text), text


@pytest.mark.parametrize("env_id", ["trace/precondition-v0", "trace/structured-data-v0", "trace/multi-step-v0"])
def test_calls_and_proposals_written_out_match_the_general_builders(env_id: str) -> None:
    import random

    from trace_envs.admissible import _read_call, _str_call, propose

    for value in ("#W1234567", "", "<tool_call>", 'a "b" \\', "é\ud800", 5, None):
        assert _read_call("get_order_details", "order_id", value) == _str_call("get_order_details", order_id=value)
    env = gym.make(env_id).unwrapped
    checked = set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        oracle = OraclePolicy()
        oracle.reset(env)
        lister = AdmissibleActions(info["tools"], near_misses=True)
        rng = random.Random(seed)
        done = False
        while not done:
            actions = lister.update(info["messages"])
            for name, args, proposal, *_ in lister._writes:
                assert proposal == say(propose(name, args))
                checked.add(name)
            action = oracle.act(obs, info) if seed % 2 == 0 else rng.choice(actions)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    assert {"cancel_pending_order", "return_delivered_order_items"} <= checked, checked
