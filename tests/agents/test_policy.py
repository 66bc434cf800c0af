"""HFPolicy on tiny random models: batching, determinism, stopping and per-row LoRA adapters."""

from __future__ import annotations

import copy
import inspect
import json

import gymnasium as gym
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from trace_agents import models
from trace_agents.kv_cache import merged_cache, prefill_groups
from trace_agents.policy import HFPolicy, Policy
from trace_agents.rollout import rollout
from trace_envs import parse_action

CALL = '<tool_call>\n{"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}\n</tool_call>'


@pytest.fixture(scope="module")
def peft_model(quiet_peft):
    """``peft_model(base, path, **kw)``: a deep copy of ``base`` with the adapter at ``path``, as a PeftModel."""

    def load(base, path, **kw):
        with quiet_peft():
            return PeftModel.from_pretrained(copy.deepcopy(base), path, **kw)

    return load


@pytest.fixture(scope="module")
def infos():
    """Openings and a mid-episode info of different lengths, so left padding matters."""
    out = []
    for env_id, seed in [("trace/retail-v0", 0), ("trace/precondition-v0", 1), ("trace/multi-step-v0", 2)]:
        env = gym.make(env_id)
        _, info = env.reset(seed=seed)
        out.append(info)
    _, _, _, _, info = env.step("Hello, who am I talking to?")
    out.append(info)
    return out


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, base, quiet_peft):
    root = tmp_path_factory.mktemp("adapters")
    with quiet_peft():
        for i, name in enumerate(("A", "B")):
            torch.manual_seed(100 + i)
            config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
            get_peft_model(copy.deepcopy(base), config).save_pretrained(root / name)
    return {name: root / name for name in ("A", "B")}


def test_one_string_per_info(base, tok, infos):
    policy = HFPolicy(base, tok, max_new_tokens=12)
    actions = policy.act_batch(infos)
    assert len(actions) == len(infos) and all(isinstance(a, str) for a in actions)
    assert policy.act_batch([]) == []
    assert isinstance(policy, Policy)
    assert policy.stats["rows"] == len(infos) and policy.stats["generated_tokens"] <= 12 * len(infos)
    steps = policy.stats["decode_steps"]  # one batch: it decodes until its longest row ends
    assert steps + 1 <= 12 and policy.stats["generated_tokens"] <= (steps + 1) * len(infos)


def test_greedy_batch_equals_each_row_alone(base, tok, infos):
    policy = HFPolicy(base, tok, max_new_tokens=16)
    lengths = {len(tok.encode(policy.prompt(i))) for i in infos}
    assert len(lengths) == len(infos)  # every row is padded differently
    batched = policy.act_batch(infos)
    assert len(set(batched)) > 1 and all(batched)  # prompt-dependent, non-trivial text
    assert batched == [policy.act_batch([info])[0] for info in infos]


def test_sampling_is_reproducible_by_seed(base, tok, infos):
    def run(seed):
        policy = HFPolicy(base, tok, max_new_tokens=16, temperature=1.0, top_p=0.95, seed=seed)
        return [policy.act_batch(infos), policy.act_batch(infos)]

    first = run(7)
    assert first == run(7)
    assert first[0] != first[1]  # each call draws anew
    assert first != run(8)
    greedy = HFPolicy(base, tok, max_new_tokens=16)
    assert greedy.act_batch(infos) == greedy.act_batch(infos)


def test_acting_leaves_the_global_rng_and_training_mode_alone(tok, infos, tiny_config):
    model = models.build_model(tok, **tiny_config).train()
    policy = HFPolicy(model, tok, max_new_tokens=4, temperature=1.0)
    state = torch.get_rng_state()
    policy.act_batch(infos[:2])
    assert torch.equal(state, torch.get_rng_state())
    assert model.training


def test_max_prompt_tokens_keeps_the_end(base, tok, infos):
    policy = HFPolicy(base, tok, max_new_tokens=4, max_prompt_tokens=40)
    assert len(policy.act_batch(infos)) == len(infos)
    assert policy.stats["prompt_tokens"] == 40 * len(infos)


def test_prompt_ends_with_the_assistant_header(base, tok, infos):
    compact = HFPolicy(base, tok).prompt(infos[0])
    assert compact.startswith("<|im_start|>system\nTools:\n") and compact.endswith("<|im_start|>assistant\n")
    full = HFPolicy(base, tok, obs_format="chat").prompt(infos[0])
    assert "<tools>" in full and "Retail support policy" in full


@pytest.fixture(scope="module")
def tool_caller(tok, infos, tiny_config):
    """A tiny model overfit to answer infos[0] with CALL and then keep talking."""
    model = models.build_model(tok, **tiny_config)
    prompt = tok.encode(HFPolicy(model, tok).prompt(infos[0]))
    target = tok.encode(CALL + " and then words that must not appear<|im_end|>")
    ids = torch.tensor([prompt + target])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    return model.eval()


def test_generation_stops_after_the_tool_call(tool_caller, tok, infos):
    policy = HFPolicy(tool_caller, tok, max_new_tokens=80)
    action = policy.act_batch([infos[0]])[0]
    assert action == CALL
    assert policy.stats["generated_tokens"] == len(tok.encode(CALL))  # stopped there, not cut afterwards
    assert policy.stats["decode_steps"] == len(tok.encode(CALL)) - 1  # the first token came from the prefill
    assert policy.stats["prefills"] == 1
    prompt = len(tok.encode(policy.prompt(infos[0])))  # step k attends over the prompt and k new tokens
    assert policy.stats["kv_reads"] == sum(prompt + k for k in range(1, len(tok.encode(CALL))))
    parsed = parse_action(action)
    assert (parsed.kind, parsed.name, parsed.arguments) == ("tool", "get_order_details", {"order_id": "#W0000001"})
    env = gym.make("trace/retail-v0")
    env.reset(seed=0)
    _, _, _, _, info = env.step(action)
    assert "parse_error" not in info


def test_one_action_is_kept_from_generated_text():
    from trace_agents.chat import one_action

    assert one_action("  Hello there.\n") == "Hello there."
    assert one_action("<think>hmm</think>\n" + CALL + "\nmore") == CALL
    assert one_action("Sure.<|im_end|>junk") == "Sure."


def test_identity_is_json_and_names_the_settings(base, tok, adapter_dirs):
    policy = HFPolicy(copy.deepcopy(base), tok, temperature=0.7, top_p=0.9, seed=3, name="tiny-test")
    ident = policy.identity()
    assert json.loads(json.dumps(ident)) == ident
    assert (ident["model"], ident["temperature"], ident["top_p"], ident["seed"]) == ("tiny-test", 0.7, 0.9, 3)
    policy.load_adapter("A", adapter_dirs["A"])
    assert policy.identity()["adapters"] == {"A": str(adapter_dirs["A"])}


def test_bad_settings_are_rejected(base, tok):
    with pytest.raises(ValueError, match="obs_format"):
        HFPolicy(base, tok, obs_format="xml")
    with pytest.raises(ValueError, match="temperature"):
        HFPolicy(base, tok, temperature=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFPolicy(base, tok, max_new_tokens=0)


def test_adapters_per_row_match_each_adapter_alone(base, tok, infos, adapter_dirs, peft_model):
    policy = HFPolicy(copy.deepcopy(base), tok, max_new_tokens=16)
    for name, path in adapter_dirs.items():
        policy.load_adapter(name, path)
    rows = infos[:3]
    choice = ["A", "B", None]
    mixed = policy.act_batch(rows, choice)

    alone = []
    for info, name in zip(rows, choice, strict=True):
        model = copy.deepcopy(base) if name is None else peft_model(base, adapter_dirs[name])
        alone.append(HFPolicy(model, tok, max_new_tokens=16).act_batch([info])[0])
    assert mixed == alone

    base_out = HFPolicy(base, tok, max_new_tokens=16).act_batch(rows)
    assert mixed[0] != base_out[0] and mixed[1] != base_out[1]  # the adapters change outputs
    assert mixed[2] == base_out[2]
    assert policy.act_batch(rows) == base_out  # no adapters named: the base model
    only_b = HFPolicy(peft_model(base, adapter_dirs["B"]), tok, max_new_tokens=16)
    assert policy.act_batch(rows, ["B", "B", "A"])[:2] == [only_b.act_batch([r])[0] for r in rows[:2]]


def test_a_peft_model_handed_in_runs_as_given(base, tok, infos, adapter_dirs, peft_model):
    model = peft_model(base, adapter_dirs["A"], adapter_name="A")
    policy = HFPolicy(model, tok, max_new_tokens=16)
    with_a = policy.act_batch(infos[:2])
    assert with_a == policy.act_batch(infos[:2], ["A", "A"])
    assert policy.act_batch(infos[:2], [None, None]) == HFPolicy(base, tok, max_new_tokens=16).act_batch(infos[:2])


def test_unknown_adapters_are_reported(base, tok, infos, adapter_dirs):
    plain = HFPolicy(base, tok, max_new_tokens=4)
    with pytest.raises(ValueError, match=r"no adapter named 'A'.*load_adapter"):
        plain.act_batch(infos[:1], ["A"])
    assert len(plain.act_batch(infos[:1], [None])) == 1
    policy = HFPolicy(copy.deepcopy(base), tok, max_new_tokens=4)
    policy.load_adapter("precondition", adapter_dirs["A"])
    with pytest.raises(ValueError, match="Did you mean 'precondition'"):
        policy.act_batch(infos[:1], ["precondtion"])
    with pytest.raises(ValueError, match="2 adapter names for 1 infos"):
        policy.act_batch(infos[:1], ["precondition", None])
    with pytest.raises(ValueError, match="already loaded"):
        policy.load_adapter("precondition", adapter_dirs["B"])


def test_from_pretrained_loads_model_and_adapters(tmp_path, base, tok, infos, adapter_dirs):
    base.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy = HFPolicy.from_pretrained(tmp_path, adapters=dict(adapter_dirs), max_new_tokens=16)
    assert policy.identity()["model"] == str(tmp_path)
    assert set(policy.adapters) == {"A", "B"}
    reference = HFPolicy(copy.deepcopy(base), tok, max_new_tokens=16)
    reference.load_adapter("B", adapter_dirs["B"])
    assert policy.act_batch(infos[:2], ["B", None]) == reference.act_batch(infos[:2], ["B", None])


def test_rollout_drives_an_hf_policy(base, tok):
    policy = HFPolicy(base, tok, max_new_tokens=8)
    result = rollout(policy, "trace/precondition-v0", 2, batch_size=2, progress=False)
    assert result.n_episodes == 2
    assert all(r["steps"] for r in result.records)


def test_reused_kv_caches_play_the_same_episodes(base, tok):
    """Keeping each slot's cache across turns changes the cost, not the actions."""

    def play(reuse):
        policy = HFPolicy(base, tok, max_new_tokens=8, reuse_cache=reuse)
        result = rollout(policy, "trace/precondition-v0", range(3), batch_size=2, progress=False)
        return [[s["action"] for s in r["steps"]] for r in result.records], policy.stats

    plain, plain_stats = play(False)
    cached, cached_stats = play(True)
    assert cached == plain
    assert plain_stats["reused_tokens"] == 0 and cached_stats["reused_tokens"] > cached_stats["prompt_tokens"] / 2


def test_prefill_groups_split_off_long_rows_only_when_it_saves_work():
    assert prefill_groups([300, 12, 20, 9]) == [[1, 2, 3], [0]]
    assert prefill_groups([30, 32, 28, 31]) == [[0, 1, 2, 3]]  # even rows: one pass
    assert prefill_groups([40, 60], overhead=64) == [[0, 1]]  # too small to pay for a second pass
    assert prefill_groups([5]) == [[0]]


def test_rows_prefilled_apart_decode_as_when_alone(base, tok, infos):
    """A long row is prefilled in its own group; every row still decodes as it would alone."""
    policy = HFPolicy(base, tok, max_new_tokens=12)
    long_info = dict(
        infos[3],
        messages=infos[3]["messages"] + [{"role": "user", "content": "Here is my whole order history again. " * 40}],
    )
    batch = [dict(infos[0], slot=0), dict(long_info, slot=1), dict(infos[1], slot=2)]
    lengths = [len(tok.encode(policy.prompt(i))) for i in batch]
    assert len(prefill_groups(lengths)) == 2
    alone = [HFPolicy(base, tok, max_new_tokens=12).act_batch([info])[0] for info in batch]
    assert policy.act_batch(batch) == alone
    # Next turn: reused caches of different lengths, merged again.
    nxt = [dict(i, messages=i["messages"] + [{"role": "user", "content": "ok"}]) for i in batch]
    again = [HFPolicy(base, tok, max_new_tokens=12, reuse_cache=False).act_batch([info])[0] for info in nxt]
    assert policy.act_batch(nxt) == again
    assert policy.stats["reused_tokens"] > 0


def test_merged_cache_right_aligns_groups_and_grows_in_place():
    from transformers import DynamicCache

    def cache(rows, length, fill):
        c = DynamicCache()
        c.update(torch.full((rows, 2, length, 4), fill), torch.full((rows, 2, length, 4), -fill), 0)
        return c, torch.ones((rows, length), dtype=torch.long)

    merged, mask = merged_cache([cache(1, 3, 1.0), cache(2, 5, 2.0)], room=2)
    layer = merged.layers[0]
    assert layer.keys.shape == (3, 2, 5, 4) and mask.tolist()[0] == [0, 0, 1, 1, 1]
    assert layer.keys[0, :, :2].abs().sum() == 0 and (layer.keys[0, :, 2:] == 1).all()
    assert (layer.values[1:] == -2).all()
    for step in range(4):  # past the room: the layer grows and keeps what it held
        keys, _ = layer.update(torch.full((3, 2, 1, 4), 9.0), torch.zeros((3, 2, 1, 4)))
        assert keys.shape[2] == 6 + step
    assert (layer.keys[:, :, 5:] == 9).all() and (layer.keys[1:, :, :5] == 2).all()
    layer.batch_select_indices(torch.tensor([2]))
    assert layer.keys.shape == (1, 2, 9, 4) and merged.get_seq_length() == 9


def test_cache_is_not_reused_across_adapters_or_without_slots(base, tok, infos, adapter_dirs):
    policy = HFPolicy(base, tok, max_new_tokens=4)
    policy.load_adapter("A", adapter_dirs["A"])
    info = dict(infos[3], slot=0)
    policy.act_batch([info])
    policy.act_batch([info], adapters=["A"])
    assert policy.stats["reused_tokens"] == 0, "a cache made without the adapter is not valid with it"
    policy.act_batch([info], adapters=["A"])
    assert policy.stats["reused_tokens"] > 0
    policy.forget()
    policy.act_batch([infos[3]])  # no slot: nothing kept, nothing reused
    assert not policy._kv


def test_prompts_stay_inside_the_models_context_by_default(base, tok, tiny_config):
    assert HFPolicy(base, tok, max_new_tokens=8).max_prompt_tokens == tiny_config["max_position_embeddings"] - 8
    assert HFPolicy(base, tok, max_prompt_tokens=100).max_prompt_tokens == 100


def test_the_policy_protocol_asks_only_for_acting_and_identity():
    from trace_agents.rollout import OracleBatch

    assert isinstance(OracleBatch(), Policy), "any act_batch + identity object is a Policy"


def test_incremental_prompt_tokens_equal_a_full_encode(base, tok):
    """Each turn tokenizes only the text after the last shared turn start, and gets the same ids."""
    policy = HFPolicy(base, tok, max_new_tokens=6, temperature=1.0)
    calls = []
    original = policy._encode

    def checked(text, slot):
        ids = original(text, slot)
        calls.append(slot)
        assert ids == tok.encode(text, add_special_tokens=False)
        return ids

    policy._encode = checked
    rollout(policy, ["trace/retail-v0", "trace/multi-step-v0"], range(3), batch_size=4, progress=False)
    assert len(calls) > 8 and None not in calls
    assert policy._text  # per-slot texts were kept
    policy.forget()
    assert not policy._text and not policy._kv


def test_eager_attention_batches_padded_rows_like_single_rows(base, tok, infos):
    """Eager attention adds its mask to the scores: a bool decode mask would let pads in."""
    model = copy.deepcopy(base)
    model.set_attn_implementation("eager")
    alone = [HFPolicy(model, tok, max_new_tokens=12).act_batch([info])[0] for info in infos]
    assert HFPolicy(model, tok, max_new_tokens=12).act_batch(infos) == alone


def test_sliding_window_models_decode_and_keep_no_slot_cache(tok, infos, tiny_config):
    torch.manual_seed(0)
    model = models.build_model(
        tok, **{**tiny_config, "use_sliding_window": True, "sliding_window": 32, "max_window_layers": 0}
    )
    assert set(model.config.layer_types) == {"sliding_attention"}
    policy = HFPolicy(model, tok, max_new_tokens=8)
    alone = [HFPolicy(model, tok, max_new_tokens=8).act_batch([info])[0] for info in infos]
    slotted = [dict(info, slot=k) for k, info in enumerate(infos)]
    assert policy.act_batch(slotted) == alone
    assert policy.act_batch(slotted) == alone and policy.stats["reused_tokens"] == 0 and not policy._kv


def test_cache_reuse_leaves_sampled_actions_alone(base, tok, infos):
    """Reuse changes how rows are grouped for prefill; each row still draws the same sample."""
    long_info = dict(
        infos[3],
        messages=infos[3]["messages"] + [{"role": "user", "content": "Here is my whole order history again. " * 40}],
    )
    batch = [dict(infos[0], slot=0), dict(long_info, slot=1), dict(infos[1], slot=2), dict(infos[2], slot=3)]
    settings = dict(max_new_tokens=8, temperature=1.0, top_k=50, top_p=0.9, seed=3)
    cached, plain = HFPolicy(base, tok, **settings), HFPolicy(base, tok, reuse_cache=False, **settings)
    for turn in range(3):
        assert cached.act_batch(batch) == plain.act_batch(batch), f"turn {turn}"
    assert cached.stats["reused_tokens"] > 0


def test_prompt_tokens_are_not_reused_across_a_turn_start_that_changed(base, tok):
    """Only a turn start the new text keeps whole is a safe place to cut the old ids."""
    policy = HFPolicy(base, tok)
    old = "<|im_start|>user\nhello<|im_start|>assistant\nok"
    new = "<|im_start|>user\nhellothere"  # differs where the second turn start was: "hellothere" is one word
    policy._encode(old, 0)
    assert policy._encode(new, 0) == tok.encode(new, add_special_tokens=False)


def test_a_switched_active_adapter_does_not_reuse_the_old_cache(tok, infos, adapter_dirs, quiet_peft, tiny_config):
    torch.manual_seed(0)  # a fresh base: earlier tests may have added adapters to the shared one
    with quiet_peft():
        model = PeftModel.from_pretrained(models.build_model(tok, **tiny_config), adapter_dirs["A"], adapter_name="A")
        model.load_adapter(str(adapter_dirs["B"]), adapter_name="B")
    policy = HFPolicy(model, tok, max_new_tokens=12)
    slotted = [dict(info, slot=k) for k, info in enumerate(infos[:2])]
    policy.act_batch(slotted)

    def switched(switch) -> None:
        """After ``switch``, the policy reuses nothing and acts like one without caches."""
        switch()
        reused = policy.stats["reused_tokens"]
        fresh = HFPolicy(model, tok, max_new_tokens=12, reuse_cache=False).act_batch(slotted)
        assert policy.act_batch(slotted) == fresh
        assert policy.stats["reused_tokens"] == reused

    switched(lambda: model.set_adapter("B"))
    switched(lambda: model.base_model.set_adapter("A"))  # past the PeftModel's own bookkeeping
    with model.disable_adapter():
        switched(lambda: None)
    switched(lambda: None)  # adapters back on: A again, whose caches were replaced meanwhile
    assert policy.act_batch(slotted) == HFPolicy(model, tok, max_new_tokens=12, reuse_cache=False).act_batch(slotted)
    assert policy.stats["reused_tokens"] > 0  # unchanged adapters: reused


def test_caches_kept_before_a_dtype_change_are_dropped(base, tok, infos):
    model = copy.deepcopy(base)
    policy = HFPolicy(model, tok, max_new_tokens=8)
    slotted = [dict(info, slot=k) for k, info in enumerate(infos[:2])]
    policy.act_batch(slotted)
    model.double()
    assert policy.act_batch(slotted) == HFPolicy(model, tok, max_new_tokens=8).act_batch(slotted)
    assert all(e.keys[0].dtype == torch.float64 for e in policy._kv.values())


class _OlderForward(torch.nn.Module):
    """``base`` behind the forward of transformers before 5.24: ``past_key_values`` in and out, no ``cache``."""

    def __init__(self, base):
        super().__init__()
        self.inner, self.config = base, base.config

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None, logits_to_keep=0
    ):
        name = "cache" if "cache" in inspect.signature(self.inner.forward).parameters else "past_key_values"
        out = self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **{name: past_key_values},
        )
        return type("Output", (), {"logits": out.logits, "past_key_values": getattr(out, name)})()


def test_models_with_the_older_cache_argument_decode_the_same(base, tok, infos):
    # transformers 5.20 to 5.23 (which the vllm extra installs) name the cache past_key_values.
    want = HFPolicy(base, tok, max_new_tokens=12).act_batch(infos)
    older = HFPolicy(_OlderForward(base), tok, max_new_tokens=12, name="older")
    assert older.act_batch(infos) == want
    assert older.act_batch([dict(info, slot=i) for i, info in enumerate(infos)]) == want  # kept caches too
