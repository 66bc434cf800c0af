"""Continuous batching: HFPolicy.act_stream and rollouts driven by it play the same episodes."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch
from peft import LoraConfig, get_peft_model

from helpers import TINY, quiet_peft
from trace_agents import models
from trace_agents.policy import HFPolicy
from trace_agents.rollout import OracleBatch, rollout, stream_by_rounds

ENV = "trace/precondition-v0"


def actions(result):
    return [[s["action"] for s in r["steps"]] for r in result.records]


def play(policy, seeds=range(6), batch_size=3, **kw):
    return rollout(policy, ENV, seeds, batch_size=batch_size, progress=False, **kw)


def test_streaming_plays_the_episodes_of_rounds_and_of_one_env_at_a_time(base, tok, tmp_path):
    stream = HFPolicy(base, tok, max_new_tokens=10)
    streamed = play(stream, store=tmp_path / "t.jsonl")
    assert stream.stats["joins"] > 0, "rows must have joined a batch that was still decoding"
    assert actions(streamed) == actions(play(HFPolicy(base, tok, max_new_tokens=10), continuous=False))
    assert actions(streamed) == actions(play(HFPolicy(base, tok, max_new_tokens=10), sequential=True))
    assert streamed.timings["act_batch_calls"] == 1 and streamed.timings["steps"] == sum(map(len, actions(streamed)))
    # Each episode was stored as it finished: a rerun with resume has nothing left to play.
    again = play(HFPolicy(base, tok, max_new_tokens=10), store=tmp_path / "t.jsonl", resume=True)
    assert again.n_episodes == 0 and again.skipped == 6


def test_streaming_without_cache_reuse_changes_nothing(base, tok):
    reused = HFPolicy(base, tok, max_new_tokens=10)
    plain = HFPolicy(base, tok, max_new_tokens=10, reuse_cache=False)
    assert actions(play(reused)) == actions(play(plain))
    assert reused.stats["reused_tokens"] > 0 and plain.stats["reused_tokens"] == 0


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, base):
    root = tmp_path_factory.mktemp("stream-adapters")
    with quiet_peft():
        for i, name in enumerate(("A", "B")):
            torch.manual_seed(200 + i)
            config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
            get_peft_model(copy.deepcopy(base), config).save_pretrained(root / name)
    return {name: root / name for name in ("A", "B")}


def test_streaming_runs_each_episode_with_its_adapter(base, tok, two_adapters):
    def policy():
        p = HFPolicy(copy.deepcopy(base), tok, max_new_tokens=10)
        for name, path in two_adapters.items():
            p.load_adapter(name, path)
        return p

    pick = lambda env_id, seed: ("A", "B", None)[seed % 3]  # noqa: E731
    streamed = play(policy(), adapters=pick)
    assert actions(streamed) == actions(play(policy(), adapters=pick, continuous=False))
    assert [r["adapter"] for r in streamed.records] == [pick(ENV, s) for s in range(6)]
    alone = [actions(play(policy(), seeds=[s], batch_size=1, adapters=pick, sequential=True))[0] for s in range(6)]
    assert actions(streamed) == alone


def test_streamed_sampling_is_reproducible_by_seed(base, tok):
    def sampled(seed):
        return actions(play(HFPolicy(base, tok, max_new_tokens=10, temperature=1.0, seed=seed)))

    assert sampled(5) == sampled(5)
    assert sampled(5) != sampled(6)


def test_act_stream_needs_distinct_slots(base, tok):
    policy = HFPolicy(base, tok, max_new_tokens=4)
    info = {"messages": [{"role": "user", "content": "hi"}], "tools": []}
    with pytest.raises(ValueError, match="distinct 'slot'"):
        policy.act_stream([dict(info, slot=0), dict(info, slot=0)], lambda i, a: None)
    with pytest.raises(ValueError, match="distinct 'slot'"):
        policy.act_stream([info], lambda i, a: None)
    policy.act_stream([], lambda i, a: None)  # nothing to do


def test_two_rows_of_one_slot_are_refused(base, tok):
    policy = HFPolicy(base, tok, max_new_tokens=6)
    info = {"messages": [{"role": "user", "content": "hi"}], "tools": []}
    handed = []

    def on_action(row, action):  # the first two rows to finish both continue in slot 9
        handed.append(row["slot"])
        return (dict(info, slot=9), None) if len(handed) <= 2 else None

    with pytest.raises(ValueError, match="slot of a row still decoding or waiting"):
        policy.act_stream([dict(info, slot=k) for k in range(4)], on_action)


def test_sliding_window_models_stream_in_rounds(tok):
    torch.manual_seed(0)
    model = models.build_model(tok, **{**TINY, "use_sliding_window": True, "sliding_window": 32,
                                       "max_window_layers": 0})
    streamed = HFPolicy(model, tok, max_new_tokens=8)
    result = play(streamed, seeds=range(3), batch_size=2)
    assert streamed.stats["joins"] == 0  # rounds: nothing joins a running batch
    assert actions(result) == actions(play(HFPolicy(model, tok, max_new_tokens=8), seeds=range(3), batch_size=2,
                                           continuous=False))


def test_stream_by_rounds_hands_each_round_to_act_batch():
    """The act_stream contract over act_batch: all rows act, then the ones with a next info go again."""
    calls = []

    class Recording(OracleBatch):
        def act_batch(self, infos, adapters=None):
            calls.append(([i["slot"] for i in infos], adapters))
            return super().act_batch(infos, adapters)

    policy = Recording()
    envs = [gym.make(ENV) for _ in range(2)]
    infos = []
    for slot, env in enumerate(envs):
        _, info = env.reset(seed=slot)
        policy.begin_episode(slot, env)
        infos.append(dict(info, slot=slot))
    turns = {0: 1, 1: 3}  # slot 0 acts once, slot 1 three times

    def on_action(info, action):
        assert isinstance(action, str) and action
        turns[info["slot"]] -= 1
        return (info, "X") if turns[info["slot"]] else None

    stream_by_rounds(policy, infos, on_action, adapters=[None, "X"])
    assert calls == [([0, 1], [None, "X"]), ([1], ["X"]), ([1], ["X"])]
