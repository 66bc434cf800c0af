"""The tiny preset: a tokenizer trained on env text and a small Qwen2-architecture model.

>>> from trace_agents.models import load, tiny_preset
>>> model, tokenizer = load(tiny_preset())          # built once, then cached
>>> model, tokenizer = load("Qwen/Qwen3-8B")         # any HF model takes the same path

The tokenizer is byte-level BPE trained on rendered oracle episodes, so it sees exactly
the text the model will see. Digits are split one per token: the agent copies order ids,
zip codes and prices digit by digit, and BPE merges of digit runs would make a copy depend
on how a number happened to be split. The chat template is TRL's Qwen2.5 template, which
TRL recognizes for tool calling and for assistant-only loss.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trace_agents import require_train_extra

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Non-special added tokens: one id each, and they survive skip_special_tokens=True decoding.
TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
PRESET_VERSION = "v2"  # v2: the corpus lists product types before reading a product
# Qwen2's pre-tokenizer split (transformers' qwen2 PRETOKENIZE_REGEX): "\p{N}" is one digit per pre-token.
_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_MARKER = ".complete"

# Qwen2Config kwargs per preset; vocab and special-token ids come from the tokenizer.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU default: 1.9M parameters with the default tokenizer (1748 tokens; the tied embedding is 0.34M).
    "tiny": {
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    },
    # GPU: ~26M parameters with the default tokenizer.
    "small": {
        "hidden_size": 512,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 1536,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    },
}
PRESET_VOCAB = {"tiny": 4096, "small": 4096}

# Corpus deficit profiles: clean demonstrations and ones with every typical mistake, so
# the tokenizer also sees wrong-format arguments and wrong records.
_CORPUS_PROFILES: tuple[dict[str, float], ...] = (
    {},
    {
        "precondition_verification": 0.5,
        "structured_data_reasoning": 0.5,
        "tool_calling_precision": 0.5,
        "multi_step_completion": 0.5,
    },
)
_CORPUS_EXCLUDE = frozenset({"trace/tau2-retail-v0"})  # needs external benchmark data


def cache_dir() -> Path:
    """Where built presets live: ``$TRACE_CACHE_DIR``, else ``~/.cache/trace-rl``."""
    env = os.environ.get("TRACE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trace-rl"


def _qwen_template() -> str:
    require_train_extra("trl")
    from trl.chat_template_utils import qwen2_5_chat_template

    return qwen2_5_chat_template


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    chat_template: str | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """Template-ready messages rendered to text (TRL's Qwen2.5 template by default), no tokenizer needed."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[list(messages)],
        tools=list(tools) if tools else None,
        chat_template=chat_template or _qwen_template(),
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0]


def corpus(
    n_episodes: int = 400, seed: int = 0, obs_format: str = "compact", env_ids: Iterable[str] | None = None
) -> list[str]:
    """Rendered oracle conversations over the registered envs, clean and with deficits."""
    import gymnasium as gym

    import trace_envs
    from trace_agents.chat import template_tools, to_chat

    ids = sorted(env_ids) if env_ids is not None else _corpus_ids()
    if not ids:
        raise ValueError("corpus needs at least one env id")
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    template = _qwen_template()
    texts: list[str] = []
    for j, env_id in enumerate(ids):
        count = n_episodes // len(ids) + (j < n_episodes % len(ids))
        env = gym.make(env_id)
        for k in range(count):
            profile = _CORPUS_PROFILES[k % len(_CORPUS_PROFILES)]
            oracle = trace_envs.OraclePolicy(deficits=profile, seed=seed)
            obs, info = env.reset(seed=seed * 1_000_003 + k)
            oracle.reset(env)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
                done = terminated or truncated
            texts.append(
                render_chat(
                    to_chat(info["messages"], info["tools"], obs_format),
                    template_tools(info["tools"], obs_format),
                    template,
                )
            )
        env.close()
    return texts


def build_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` of at most ``vocab_size`` tokens with the Qwen2.5 template.

    The env text is templated, so merges run out (every repeated word is one token) well
    before 4096 on the default corpus: ``vocab_size`` is a cap, ``len(tokenizer)`` the size.
    """
    require_train_extra("tokenizers")
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, IM_START, IM_END]
    n_base = vocab_size - len(TOOL_TOKENS)
    if n_base < 256 + len(specials):
        raise ValueError(
            f"vocab_size must be at least {256 + len(specials) + len(TOOL_TOKENS)} "
            f"(bytes, special and tool tokens), got {vocab_size}"
        )
    tk = Tokenizer(BPE())
    # Exactly Qwen2's normalizer and pre-tokenizer, because AutoTokenizer loads any
    # model_type="qwen2" directory as Qwen2Tokenizer, which rebuilds both from code: a
    # tokenizer built any other way would tokenize differently once saved and reloaded.
    # Its split regex has one token per digit (ids are copied digit by digit) and lets a
    # word keep its leading "_" or quote, ~10% fewer tokens on env text than GPT-2's regex.
    # NFC means decode(encode(s)) == s for NFC text (all env text), not for decomposed accents.
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps character offsets exact, which assistant-token masks rely on.
    tk.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=n_base,
        special_tokens=specials,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    # Added after training: added before, they take ids 0-3 and collide with the special tokens.
    tk.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        bos_token=None,
        extra_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=PRESETS["tiny"]["max_position_embeddings"],
    )
    tok.chat_template = _qwen_template()
    return tok


def build_model(tokenizer: Any, preset: str = "tiny", seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised ``Qwen2ForCausalLM`` sized by ``preset``, its vocabulary the tokenizer's.

    ``overrides`` are Qwen2Config fields that replace the preset's (e.g. ``hidden_size=64`` in tests).
    """
    require_train_extra("torch")
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        **copy.deepcopy({**PRESETS[preset], **overrides}),
    )  # the config must not share the table
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # Both end markers stop generation, as in Qwen2.5-Instruct's generation config.
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=sorted({eos, pad}), pad_token_id=pad)
    return model.eval()


def _corpus_ids() -> list[str]:
    import trace_envs

    return [i for i in trace_envs.registered_ids() if i not in _CORPUS_EXCLUDE]


def preset_fingerprint(preset: str = "tiny", n_episodes: int = 400) -> str:
    """A short hash of everything a preset build reads: its settings, the chat template, the
    specs of the corpus envs and the code that plays and renders them. A change to any of
    them gives another cache entry, so a stale tokenizer or model is never reused."""
    import hashlib
    import json

    import trace_agents.chat
    import trace_envs
    from trace_envs.registration import spec_of

    h = hashlib.sha256(
        json.dumps(
            {
                "version": PRESET_VERSION,
                "preset": PRESETS[preset],
                "n_episodes": n_episodes,
                "vocab": PRESET_VOCAB[preset],
                "template": _qwen_template(),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    for env_id in _corpus_ids():
        h.update(json.dumps(spec_of(env_id).to_json(), sort_keys=True, default=str).encode())
    sources = [*sorted(Path(trace_envs.__file__).parent.rglob("*.py")), Path(trace_agents.chat.__file__)]
    for source in sources:
        h.update(source.read_bytes())
    return h.hexdigest()[:12]


def preset_path(preset: str = "tiny", cache: str | Path | None = None, n_episodes: int = 400) -> Path:
    """Where ``tiny_preset(preset, cache, n_episodes=...)`` keeps its files (see :func:`preset_fingerprint`)."""
    return Path(cache or cache_dir()) / "presets" / f"{preset}-{preset_fingerprint(preset, n_episodes)}"


def tiny_preset(
    preset: str = "tiny", cache: str | Path | None = None, rebuild: bool = False, n_episodes: int = 400
) -> Path:
    """Build the preset's tokenizer and random-init model once; the directory ``load`` reads."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    path = preset_path(preset, cache, n_episodes)
    if (path / _MARKER).exists() and not rebuild:
        return path
    require_train_extra("filelock")
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (parallel test workers, torchrun ranks): the others wait, then
    # find the finished build. Without the lock, a late builder would delete a directory an
    # early one had just returned.
    with FileLock(str(path) + ".lock"):
        if (path / _MARKER).exists() and not rebuild:
            return path
        _build_preset(preset, path, n_episodes)
    return path


def _build_preset(preset: str, path: Path, n_episodes: int) -> None:
    t0 = time.perf_counter()
    print(f"[models] building the {preset} preset in {path} ({n_episodes} corpus episodes) ...", file=sys.stderr)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = build_tokenizer(corpus(n_episodes), PRESET_VOCAB[preset])
    model = build_model(tokenizer, preset)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    # The marker is written last: a directory without it is a crashed build and is rebuilt.
    (tmp / _MARKER).write_text(f"{preset} {PRESET_VERSION} params={n_params} vocab={len(tokenizer)}\n")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    print(
        f"[models] built {preset}: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
        f"{time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )


def looks_like_path(name: str | Path) -> bool:
    """Whether a model name is meant as a local path rather than a hub id (``name`` or ``org/name``).

    A path starts with ``.``, ``/`` or ``~``, has more than one ``/`` or ends with one, or
    starts with a local directory (``runs/model`` where ``runs/`` exists). Hub ids do none of these.
    """
    text = str(name).replace(os.sep, "/")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or text.endswith("/"):
        return True
    return "/" in text and Path(text.split("/", 1)[0]).is_dir()


def resolve(path_or_id: str | Path) -> str:
    """What ``from_pretrained`` should read: an existing local path (``~`` expanded), else a hub id.

    A name that :func:`looks_like_path` but does not exist raises ``FileNotFoundError`` at
    once, instead of a hub lookup that fails with a message about repo ids (or retries).
    """
    local = Path(path_or_id).expanduser()
    if local.exists():
        return str(local)
    if looks_like_path(path_or_id):
        raise FileNotFoundError(
            f"no such model directory: {path_or_id} (run `trace bootstrap` first, or pass a hub id)"
        )
    return str(path_or_id)


def load(path_or_id: str | Path, device: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local HF directory or a hub id (see :func:`resolve`), ready for
    batched generation."""
    source = resolve(path_or_id)
    require_train_extra("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or "auto", device_map=device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer
