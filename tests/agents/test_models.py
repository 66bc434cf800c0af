"""The tiny preset: tokenizer round trips, the chat template, the model, caching and loading."""

from __future__ import annotations

import json
import unicodedata

import gymnasium as gym
import pytest
import torch
from transformers import AutoTokenizer
from trl.chat_template_utils import get_training_chat_template

from trace_agents import models
from trace_agents.chat import template_tools, to_chat
from trace_envs import OraclePolicy, parse_action

GENERATED_CALL = '<tool_call>\n{"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}\n</tool_call>'
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return models.corpus(30)


@pytest.fixture(scope="module")
def tok(texts):
    return models.build_tokenizer(texts, vocab_size=1024)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, tok):
    """A tiny model and its tokenizer saved like a preset."""
    path = tmp_path_factory.mktemp("tiny")
    models.build_model(tok, **TINY).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cache_dir_honours_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACE_CACHE_DIR", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("TRACE_CACHE_DIR")
    assert models.cache_dir().parts[-2:] == (".cache", "trace-rl")


def test_corpus_is_rendered_chat_text(texts):
    assert len(texts) == 30
    assert all(t.startswith("<|im_start|>system\nTools:\n") for t in texts)  # the compact system message
    assert sum("<tool_call>\n{" in t for t in texts) >= 25
    assert sum("<tool_response>\n" in t for t in texts) >= 25
    assert models.corpus(3) == models.corpus(3)  # deterministic


def test_corpus_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_episodes"):
        models.corpus(0)
    with pytest.raises(ValueError, match="env id"):
        models.corpus(2, env_ids=[])


def test_tokenizer_special_and_tool_tokens(tok):
    assert len(tok) <= 1024
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "left"
    assert tok.chat_template == models._qwen_template()
    for t in (*models.TOOL_TOKENS, "<|im_start|>", "<|im_end|>"):
        assert len(tok.encode(t)) == 1, t
    # Tool tags are not special: skipping special tokens keeps them, drops the chat markers.
    ids = tok.encode("<|im_start|>assistant\n" + GENERATED_CALL + "<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n" + GENERATED_CALL


def test_tokenizer_round_trips_every_corpus_text(tok, texts):
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "Ünïcödé names: José Müller, 東京, emoji 🙂, ß and ﬁ ligature",
        "  leading and   inner spaces\r\n\ttabs\n\n",
        '{"price": 320.92, "zip": "43237", "ids": ["#W0000001", "8384507844"]}',
    ],
)
def test_tokenizer_round_trips_unicode_and_whitespace(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_tokenizer_normalizes_to_nfc_like_qwen2(tok):
    decomposed = "Jose\u0301"
    assert tok.decode(tok.encode(decomposed)) == unicodedata.normalize("NFC", decomposed)


def test_digits_are_single_tokens(tok):
    tokens = tok.convert_ids_to_tokens(tok.encode('"#W0000001" 43237 320.92'))
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits and all(len(t) == 1 for t in digits), tokens


def test_template_round_trips_a_tool_call_conversation(tok):
    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "Cancel #W0000001, I'm Zoë (zoë@example.com)."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "find_user_id_by_email",
                        "arguments": json.dumps({"email": "zoë@example.com"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "find_user_id_by_email", "content": "zoe_1"},
        {"role": "assistant", "content": "Done."},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "find_user_id_by_email",
                "description": "d",
                "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]},
            },
        }
    ]
    for obs_format in ("compact", "chat"):
        chat = to_chat(messages, tools, obs_format)
        text = tok.apply_chat_template(chat, tools=template_tools(tools, obs_format), tokenize=False)
        assert text == models.render_chat(chat, template_tools(tools, obs_format))
        assert (
            '<tool_call>\n{"name": "find_user_id_by_email", "arguments": {"email": "zoë@example.com"}}\n'
            "</tool_call><|im_end|>" in text
        )
        ids = tok.apply_chat_template(chat, tools=template_tools(tools, obs_format), tokenize=True, return_dict=True)[
            "input_ids"
        ]
        assert list(ids) == tok.encode(text)
        assert tok.decode(ids) == text


def test_generated_tool_call_round_trips_and_parses(tok):
    ids = tok.encode(GENERATED_CALL)
    assert ids[0] == tok.convert_tokens_to_ids("<tool_call>")
    assert ids[-1] == tok.convert_tokens_to_ids("</tool_call>")
    text = tok.decode(ids, skip_special_tokens=True)
    assert text == GENERATED_CALL
    parsed = parse_action(text)
    assert (parsed.kind, parsed.name, parsed.arguments) == ("tool", "get_order_details", {"order_id": "#W0000001"})


def test_assistant_masks_cover_exactly_the_assistant_turns(tok, texts):
    """SFT with assistant-only loss relies on exact character offsets."""
    env = gym.make("trace/retail-v0")
    oracle = OraclePolicy()
    obs, info = env.reset(seed=3)
    oracle.reset(env)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
        done = terminated or truncated
    chat = to_chat(info["messages"], info["tools"], "compact")
    out = tok.apply_chat_template(
        chat,
        chat_template=get_training_chat_template(tok),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    spans, start = [], None
    for k, m in enumerate([*mask, 0]):
        if m and start is None:
            start = k
        elif not m and start is not None:
            spans.append(tok.decode(ids[start:k]))
            start = None
    assistant = [m for m in chat if m["role"] == "assistant"]
    assert len(spans) == len(assistant)
    for span, message in zip(spans, assistant, strict=True):
        assert span.endswith("<|im_end|>\n")
        if message.get("tool_calls"):
            assert span.startswith("\n<tool_call>\n{") and parse_action(span.split("<|im_end|>")[0]).kind == "tool"
        else:
            assert span == "\n" + message["content"] + "<|im_end|>\n"


def test_saved_tokenizer_reloads_identically(tok, texts, saved_dir):
    """AutoTokenizer rebuilds a qwen2 directory as Qwen2Tokenizer: it must tokenize the same."""
    loaded = AutoTokenizer.from_pretrained(saved_dir)
    samples = [*texts[:5], GENERATED_CALL, "José 東京 🙂 Jose\u0301"]
    for text in samples:
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.chat_template == tok.chat_template
    assert len(loaded) == len(tok)


def test_build_model_is_seeded_and_sized_by_the_tokenizer(tok):
    a = models.build_model(tok, **TINY)
    b = models.build_model(tok, **TINY)
    c = models.build_model(tok, seed=1, **TINY)
    assert a.config.vocab_size == len(tok)
    assert (a.config.eos_token_id, a.config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert set(a.generation_config.eos_token_id) == {tok.eos_token_id, tok.pad_token_id}
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    tiny = models.build_model(tok)
    assert 1e6 < sum(p.numel() for p in tiny.parameters()) < 5e6
    with pytest.raises(ValueError, match="unknown preset"):
        models.build_model(tok, preset="huge")


def test_build_tokenizer_rejects_a_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size"):
        models.build_tokenizer(["x"], vocab_size=100)


def test_tiny_preset_builds_once_and_reloads(tmp_path, monkeypatch):
    path = models.tiny_preset(cache=tmp_path, n_episodes=10)
    assert path == models.preset_path("tiny", tmp_path, n_episodes=10) and path.parent == tmp_path / "presets"
    assert (path / ".complete").exists() and (path / "model.safetensors").exists()
    model, tok = models.load(path)
    assert model.config.vocab_size == len(tok) and tok.padding_side == "left"

    def boom(*a, **k):
        raise AssertionError("rebuilt a cached preset")

    monkeypatch.setattr(models, "build_tokenizer", boom)
    assert models.tiny_preset(cache=tmp_path, n_episodes=10) == path  # cached: no rebuild
    (path / ".complete").unlink()  # as after a crash mid-build
    with pytest.raises(AssertionError, match="rebuilt"):
        models.tiny_preset(cache=tmp_path, n_episodes=10)
    monkeypatch.undo()
    models.tiny_preset(cache=tmp_path, n_episodes=10)
    assert (path / ".complete").exists()
    assert not list(tmp_path.glob("presets/*.tmp-*"))


def test_concurrent_builders_all_get_a_complete_preset(tmp_path):
    """Processes that ask for the same preset at once (test workers, torchrun ranks) build it once."""
    import subprocess
    import sys

    code = (
        "import sys; from trace_agents import models; "
        "p = models.tiny_preset(cache=sys.argv[1], n_episodes=6); "
        "m, t = models.load(p); print('ok', m.config.vocab_size == len(t))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert all(out.strip().endswith("ok True") for out, _ in outs)
    assert sum("building the tiny preset" in err for _, err in outs) == 1
    assert not list(tmp_path.glob("presets/*.tmp-*"))


def test_tiny_preset_rejects_unknown_presets(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        models.tiny_preset("huge", cache=tmp_path)


def test_load_a_saved_dir(saved_dir, tok):
    model, loaded = models.load(saved_dir)
    assert not model.training
    assert loaded.padding_side == "left" and loaded.pad_token_id == tok.pad_token_id
    assert str(next(model.parameters()).device) == "cpu"
    assert model.config.vocab_size == len(loaded)


def test_load_falls_back_to_eos_for_padding(tmp_path, saved_dir):
    import shutil

    target = tmp_path / "nopad"
    shutil.copytree(saved_dir, target)
    config_file = target / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["pad_token"] = None
    config_file.write_text(json.dumps(config))
    _, tok = models.load(target, dtype="float32")
    assert tok.pad_token == tok.eos_token == "<|im_end|>"


def test_the_preset_cache_key_follows_what_the_build_reads(monkeypatch):
    """A changed preset table, corpus size, chat template or env code is another cache entry (a stale
    tokenizer or model was reused when the key was the preset name and a hand-bumped version)."""
    base = models.preset_fingerprint("tiny", 10)
    assert models.preset_fingerprint("tiny", 10) == base and models.preset_fingerprint("tiny", 11) != base
    monkeypatch.setitem(models.PRESETS, "tiny", {**models.PRESETS["tiny"], "hidden_size": 96})
    assert models.preset_fingerprint("tiny", 10) != base
    monkeypatch.undo()
    monkeypatch.setattr(models, "_qwen_template", lambda: "another template")
    assert models.preset_fingerprint("tiny", 10) != base
    monkeypatch.undo()
    tok = models.build_tokenizer(models.corpus(4), vocab_size=600)
    model = models.build_model(tok)
    assert model.config.rope_parameters is not models.PRESETS["tiny"]["rope_parameters"]


def test_the_preset_cache_key_follows_the_corpus_specs_contents(monkeypatch):
    """The same id with another spec is another corpus (the key hashed only the id before)."""
    import json

    import gymnasium as gym

    from trace_envs import registration

    spec = json.loads((registration.BUILTIN_SPEC_DIRS[0] / "precondition-v0.json").read_text())
    scratch = "testing/fingerprint-v0"
    monkeypatch.setattr(models, "_corpus_ids", lambda: [scratch])
    try:
        registration.register_spec({**spec, "id": scratch})
        before = models.preset_fingerprint("tiny", 10)
        registration.register_spec({**spec, "id": scratch, "max_turns": 7}, override=True)
        assert models.preset_fingerprint("tiny", 10) != before
    finally:
        gym.registry.pop(scratch, None)
        registration._OURS.pop(scratch, None)
