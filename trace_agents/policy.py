"""Policies: what turns env infos into actions, one batched call per step round.

>>> from trace_agents.policy import HFPolicy
>>> policy = HFPolicy.from_pretrained(path, adapters={"precondition": "runs/lora/precondition"})
>>> policy.act_batch(infos, adapters=["precondition", None])   # per-row LoRA, None = base model

:class:`HFPolicy` renders each info's ``messages`` with the tokenizer's chat template
(through :func:`trace_agents.chat.to_chat`, the conversion training uses too), left-pads
the batch, decodes with the KV cache and returns the new text of every row. Several
LoRA adapters can be loaded at once; PEFT's mixed-batch inference (``adapter_names``)
runs each row through its own adapter in one forward pass. A row that ends its turn
leaves the batch at once, and the cache grows in place, so a batch costs about what its
rows still decoding cost (see ``benchmarks/bench_rollout.py``).
"""

from __future__ import annotations

import difflib
import inspect
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from trace_agents import eval_mode, kv_cache, require_train_extra
from trace_agents.chat import TOOL_CLOSE, one_action, template_tools, to_chat, with_system_prompt

BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch


@runtime_checkable
class Policy(Protocol):
    """What rollouts drive; an optional ``begin_episode(slot, env)`` is called after each reset."""

    def act_batch(self, infos: list[dict[str, Any]], adapters: list[str | None] | None = None) -> list[str]:
        """One action per info; ``adapters`` names each row's LoRA adapter (None: the base model)."""
        ...

    def identity(self) -> dict[str, Any]:
        """A JSON-able description (model, adapters, sampling) that names the agent in records."""
        ...


@dataclass
class _SlotText:
    """One slot's last prompt text, its token ids, and where each turn starts in both."""

    text: str
    ids: list[int]
    marks: list[tuple[int, int]]  # (character offset, token index) of every turn-start token


def _common_text_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings (binary search over C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _single_token(tokenizer: Any, text: str) -> tuple[str, int] | None:
    """``(text, id)`` when ``text`` is one token of ``tokenizer`` (a chat template's turn start), else None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return (text, ids[0]) if len(ids) == 1 else None


class HFPolicy:
    """A transformers causal LM with its chat template, optionally carrying LoRA adapters.

    ``temperature == 0`` decodes greedily; otherwise it samples with ``top_p`` (and
    ``top_k``; 0 disables it), reproducibly: call ``n`` of a policy samples with seed
    ``seed + n``, without disturbing the caller's global RNG. Generation stops at the
    end-of-turn token(s) and right after ``</tool_call>``, so one turn is one action.
    Prompts longer than the model's context (``max_prompt_tokens``, by default its
    ``max_position_embeddings`` minus ``max_new_tokens``) keep their latest tokens.
    Decoding uses exactly these settings (all in :meth:`identity`): a model's own
    ``generation_config`` extras, such as Qwen2.5-Instruct's ``repetition_penalty``, are
    not applied.

    Args:
        model: A loaded causal LM, or a PeftModel (run with its active adapter when a batch
            names no adapters); :meth:`load_adapter` adds more.
        tokenizer: Its tokenizer; it must have a chat template and a pad or eos token.
        obs_format: ``"compact"`` (one signature line per tool instead of the env's system
            message, no tool schemas: for tiny models) or ``"chat"`` (the system message and
            the full schemas through the template's ``tools``).
        max_new_tokens: The most tokens generated per turn (>= 1).
        temperature: Sampling temperature (>= 0); 0 decodes greedily.
        top_p: Nucleus sampling mass, in (0, 1]; 1.0: off.
        seed: Base of the sampling seeds (call ``n`` uses ``seed + n``).
        max_prompt_tokens: The most prompt tokens kept (the latest); None: the model's
            ``max_position_embeddings`` minus ``max_new_tokens``, or no limit if it has none.
        top_k: Sample only among the k likeliest tokens; 0: off.
        chat_template_kwargs: Extra keyword arguments for ``apply_chat_template`` (e.g.
            ``{"enable_thinking": False}``).
        name: The model as :meth:`identity` names it, which keys stored episodes; None: its
            ``name_or_path`` (a local directory resolved, with a digest of its weights).
        reuse_cache: Keep each env slot's KV cache and prompt tokens across turns, so a turn
            only encodes what is new (full-attention models, rows with a distinct ``slot``).
        system_prompt: Instructions put before the env's system message (the text GEPA
            evolves); None: none.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        obs_format: str = "compact",
        max_new_tokens: int = 192,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        max_prompt_tokens: int | None = None,
        top_k: int = 0,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        reuse_cache: bool = True,
        system_prompt: str | None = None,
    ) -> None:
        require_train_extra("torch")
        if obs_format not in ("compact", "chat"):
            raise ValueError(f"obs_format must be 'compact' or 'chat', got {obs_format!r}")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(
                f"need temperature >= 0, 0 < top_p <= 1 and top_k >= 0; got temperature={temperature}, "
                f"top_p={top_p}, top_k={top_k}"
            )
        if max_new_tokens < 1 or (max_prompt_tokens is not None and max_prompt_tokens < 1):
            raise ValueError(
                f"max_new_tokens and max_prompt_tokens must be >= 1, got {max_new_tokens} and {max_prompt_tokens}"
            )
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat_template; HFPolicy renders prompts with it")
        self.model = model
        self.tokenizer = tokenizer
        self.obs_format = obs_format
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.seed = seed
        if max_prompt_tokens is None:  # stay inside the model's context: keep the latest turns
            limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
            if isinstance(limit, int) and limit > max_new_tokens:
                max_prompt_tokens = limit - max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        # Instructions put before the env's system message (GEPA evolves this text).
        self.system_prompt = system_prompt
        from trace_agents.trajectories import weights_id

        # Identities key stored episodes: a local model is its resolved path plus a weights digest.
        self.name, self.weights = (
            (name, None) if name else weights_id(str(getattr(model, "name_or_path", "") or type(model).__name__))
        )
        self.adapters: dict[str, str] = {}
        self.adapter_weights: dict[str, str | None] = {}
        # Per-slot KV caches kept across turns (see _batched_past); rows without a "slot" skip it.
        self.reuse_cache = reuse_cache
        self._kv: dict[Any, kv_cache.SlotCache] = {}
        # Per-slot prompt tokens: a new turn only tokenizes the text after the last turn
        # start it shares with the previous prompt (turn-start tokens split the tokenizer's input).
        self._text: dict[Any, _SlotText] = {}
        self._turn_start = _single_token(tokenizer, "<|im_start|>")
        # A PeftModel handed in runs as given (its active adapter) when no adapters are named;
        # one this policy wraps for load_adapter runs as the base model.
        self._owns_peft = False
        self._calls = 0
        self._kv_where: tuple[Any, Any] | None = None  # device and dtype the kept caches were made on
        self._tuner_layer: Any = None  # a LoRA layer of the model, read for its active adapters (False: none)
        # prefills and decode_steps count forward passes; generated_tokens over their sum is how
        # many rows a pass served on average (a batch decodes until its longest row ends its turn).
        # kv_reads: cache positions (padding included) the decode steps attended over, summed over rows.
        self.stats = {
            "calls": 0,
            "rows": 0,
            "prompt_tokens": 0,
            "reused_tokens": 0,
            "generated_tokens": 0,
            "prefills": 0,
            "decode_steps": 0,
            "kv_reads": 0,
            "seconds": 0.0,
        }
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        self._pad = pad
        self._stop_ids, self._stop_strings = self._stops()
        self._stop_set = frozenset(self._stop_ids)
        self._forward_kw: tuple[dict[str, Any], str] | None = None  # see _forward_kwargs

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        adapters: Mapping[str, str | Path] | None = None,
        device: str | None = None,
        dtype: Any = None,
        **kw: Any,
    ) -> HFPolicy:
        """Load a model directory or hub id (see :func:`trace_agents.models.load`) and its adapters."""
        from trace_agents.models import load

        model, tokenizer = load(path, device=device, dtype=dtype)
        policy = cls(model, tokenizer, **kw)
        for adapter_name, adapter_path in (adapters or {}).items():
            policy.load_adapter(adapter_name, adapter_path)
        return policy

    # ------------------------------------------------------------------ set-up
    def _stops(self) -> tuple[list[int], list[str]]:
        """Token ids that end a turn, and stop strings for tool-call ends that are not one token."""
        tok = self.tokenizer
        ids: set[int] = set()
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else (eos or []))
        if tok.eos_token_id is not None:
            ids.add(tok.eos_token_id)
        strings = []
        for text in ("<|im_end|>", TOOL_CLOSE):
            encoded = tok.encode(text, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(encoded[0])
            elif text == TOOL_CLOSE:
                strings.append(text)
        return sorted(ids), strings

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the LoRA adapter at ``path`` under ``name`` (selected per row in :meth:`act_batch`)."""
        require_train_extra("peft")
        from peft import PeftModel

        if name == BASE:
            raise ValueError(f"{BASE!r} is PEFT's name for the base model; choose another adapter name")
        if isinstance(self.model, PeftModel) and name in self.model.peft_config:
            raise ValueError(f"an adapter named {name!r} is already loaded")
        with warnings.catch_warnings():
            # PEFT reads transformers' deprecated `is_gradient_checkpointing`; nothing a caller can fix.
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
                self._owns_peft = True
        self.model.eval()
        from trace_agents.trajectories import weights_id

        self.adapters[name], self.adapter_weights[name] = weights_id(path)
        self._tuner_layer = None  # the model now has LoRA layers to read

    # ------------------------------------------------------------------ acting
    def prompt(self, info: Mapping[str, Any]) -> str:
        """The chat-template text the model continues for ``info`` (ends with the assistant header)."""
        messages = with_system_prompt(to_chat(info["messages"], info["tools"], self.obs_format), self.system_prompt)
        return self.tokenizer.apply_chat_template(
            messages,
            tools=template_tools(info["tools"], self.obs_format),
            add_generation_prompt=True,
            tokenize=False,
            **self.chat_template_kwargs,
        )

    def _adapter_state(self) -> Any:
        """The adapters a model run as given applies now: ``(active adapters, disabled)``, None without any.

        Read from a LoRA layer, which every way of switching adapters updates (``set_adapter``
        on the PeftModel or its tuner, ``disable_adapter()``, transformers' PEFT integration).
        """
        if not hasattr(self.model, "peft_config"):
            return None
        if self._tuner_layer is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._tuner_layer = next((m for m in self.model.modules() if isinstance(m, BaseTunerLayer)), False)
        if self._tuner_layer is False:
            return None
        return tuple(self._tuner_layer.active_adapters), bool(self._tuner_layer.disable_adapters)

    def _adapter_names(self, adapters: Sequence[str | None] | None, n: int) -> list[str] | None:
        """PEFT ``adapter_names`` for the batch, or None to run the model as it is."""
        if adapters is None:
            return [BASE] * n if self._owns_peft else None
        if len(adapters) != n:
            raise ValueError(f"got {len(adapters)} adapter names for {n} infos")
        known = set(getattr(self.model, "peft_config", {}) or {})
        for a in {a for a in adapters if a is not None}:
            if a not in known:
                close = difflib.get_close_matches(a, sorted(known), n=1)
                raise ValueError(
                    f"no adapter named {a!r}; loaded: {sorted(known) or 'none'} (use load_adapter)."
                    + (f" Did you mean {close[0]!r}?" if close else "")
                )
        if not known:  # a plain model and every row asks for the base model
            return None
        return [BASE if a is None else a for a in adapters]

    def act_batch(self, infos: list[dict[str, Any]], adapters: list[str | None] | None = None) -> list[str]:
        """Generate one action per info in one left-padded batch.

        ``adapters=None`` runs the model as given (a PeftModel with its active adapter; the
        base model when the adapters were added with :meth:`load_adapter`). A list names
        each row's adapter, None for the base model.
        """
        import torch

        if not infos:
            return []
        t0 = time.perf_counter()
        adapter_names = self._adapter_names(adapters, len(infos))
        rows = [self._encode(self.prompt(info), info.get("slot")) for info in infos]
        if self.max_prompt_tokens is not None:
            rows = [r[-self.max_prompt_tokens :] for r in rows]  # keep the latest turns
        slots = [info.get("slot") for info in infos]
        full_attention = self._plain_cache()
        param = next(self.model.parameters())
        if self._kv and self._kv_where != (param.device, param.dtype):
            self._kv.clear()  # the model moved or changed dtype since those caches were made
        self._kv_where = (param.device, param.dtype)
        # Slot caches are kept for full-attention models only: a sliding-window layer holds
        # just its window, which a later turn could not extend.
        keyed = self.reuse_cache and full_attention and None not in slots and len(set(slots)) == len(slots)
        # A model run as given runs whatever adapters are active now: a cache made under others must not be reused.
        row_adapters = adapter_names or [self._adapter_state()] * len(rows)
        prefix = self._reusable(rows, slots, row_adapters) if keyed else [0] * len(rows)
        groups = (
            kv_cache.prefill_groups([len(r) - p for r, p in zip(rows, prefix, strict=True)])
            if full_attention
            else [list(range(len(rows)))]
        )
        parts = [self._layout([rows[i] for i in g], [prefix[i] for i in g], [slots[i] for i in g]) for g in groups]
        # Eval mode: no dropout, and PEFT refuses adapter_names in training mode.
        with eval_mode(self.model), torch.inference_mode():
            new = self._generate(
                groups,
                parts,
                param.device,
                adapter_names,
                rows,
                slots if keyed else None,
                row_adapters,
                seed=self.seed + self._calls,
            )
        self._calls += 1
        generated = sum(len(row) for row in new)
        actions = [one_action(self.tokenizer.decode(row, skip_special_tokens=True)) for row in new]
        self.stats["reused_tokens"] += sum(prefix)
        self.stats["calls"] += 1
        self.stats["rows"] += len(rows)
        self.stats["prompt_tokens"] += sum(len(r) for r in rows)
        self.stats["generated_tokens"] += generated
        self.stats["seconds"] += time.perf_counter() - t0
        return actions

    def _encode(self, text: str, slot: Any) -> list[int]:
        """Token ids of ``text``; with a slot, the ids up to the last shared turn start are reused."""
        encode = lambda t: self.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
        if slot is None or self._turn_start is None or not self.reuse_cache:
            return encode(text)
        marker, token = self._turn_start
        entry = self._text.get(slot)
        ids = None
        if entry is not None:
            shared = _common_text_prefix(entry.text, text)
            # Cut at a turn start the new text still has whole: special tokens split the text,
            # so the ids before it do not depend on what follows.
            cut = next(((c, t) for c, t in reversed(entry.marks) if c + len(marker) <= shared), None)
            if cut is not None:
                ids = entry.ids[: cut[1]] + encode(text[cut[0] :])
        if ids is None:
            ids = encode(text)
        offsets, i = [], text.find(marker)
        while i >= 0:
            offsets.append(i)
            i = text.find(marker, i + len(marker))
        positions = [i for i, t in enumerate(ids) if t == token]
        marks = list(zip(offsets, positions, strict=True)) if len(offsets) == len(positions) else []
        self._text[slot] = _SlotText(text, ids, marks)
        return ids

    def forget(self, slot: Any = None) -> None:
        """Drop the KV cache and prompt tokens kept for ``slot`` (all slots when None)."""
        if slot is None:
            self._kv.clear()
            self._text.clear()
        else:
            self._kv.pop(slot, None)
            self._text.pop(slot, None)

    def _reusable(self, rows: list[list[int]], slots: list[Any], adapters: list[str | None]) -> list[int]:
        """How many leading tokens of each row its slot's cache already holds.

        A row reuses the longest common prefix of its new prompt and what its slot saw last
        turn (prompt plus generated tokens), always leaving one token to feed. A changed
        adapter, or a conversation that starts over, reuses nothing it should not.
        """
        prefix = []
        for r, slot, adapter in zip(rows, slots, adapters, strict=True):
            entry = self._kv.get(slot)
            prefix.append(0 if entry is None or entry.adapter != adapter else kv_cache.common_prefix(entry.ids, r[:-1]))
        return prefix

    def _batched_past(self, slots: list[Any], prefix: list[int], room: int) -> Any:
        """The slots' cached prefixes, left-padded into one cache with room for ``room`` more tokens.

        None when no row reuses anything. The rows are copied once, straight into place.
        """
        longest = max(prefix)
        if longest == 0:
            return None
        donor = next(self._kv[s] for s, p in zip(slots, prefix, strict=True) if p)  # shape of an empty row
        entries = [self._kv[s] if p else donor for s, p in zip(slots, prefix, strict=True)]
        pairs = list(zip(entries, prefix, strict=True))
        return kv_cache.cache_of(
            [
                kv_cache.right_aligned(
                    [e.keys[layer][None, ..., :p, :] for e, p in pairs],
                    [e.values[layer][None, ..., :p, :] for e, p in pairs],
                    longest,
                    room,
                )
                for layer in range(len(donor.keys))
            ]
        )

    def _layout(self, rows: list[list[int]], prefix: list[int], slots: list[Any]) -> tuple[Any, Any, int, Any]:
        """``(input_ids, attention_mask, reused, past)`` of a group of rows.

        Row layout: [pad][reused prefix][pad][new tokens]; ``past`` holds the first
        ``reused`` columns. Positions come from the mask's cumulative sum, so a row's
        tokens keep the positions its cached keys were made with.
        """
        import torch

        reused = max(prefix)
        width = reused + max(len(r) - p for r, p in zip(rows, prefix, strict=True))
        input_ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, p) in enumerate(zip(rows, prefix, strict=True)):
            input_ids[i, reused - p : reused] = torch.tensor(r[:p], dtype=torch.long)
            attention_mask[i, reused - p : reused] = 1
            input_ids[i, width - (len(r) - p) :] = torch.tensor(r[p:], dtype=torch.long)
            attention_mask[i, width - (len(r) - p) :] = 1
        room = width - reused + self.max_new_tokens
        return input_ids, attention_mask, reused, self._batched_past(slots, prefix, room)

    def _text_config(self) -> Any:
        """The model's config, or its text part for a multimodal one (None without a config)."""
        config = getattr(self.model, "config", None)
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def _plain_cache(self) -> bool:
        """Whether every layer attends to the whole context (no sliding windows): row groups can merge."""
        types = getattr(self._text_config(), "layer_types", None) or ["full_attention"]
        return all(t == "full_attention" for t in types)

    def _decode_mask(self, dtype: Any) -> Callable[[Any], Any]:
        """How a decode step's ``[rows, length]`` bool mask (True = attend) is handed to the model.

        SDPA takes a 4-D bool mask as is; eager attention adds its mask to the scores, so it
        gets a 4-D additive one. Anything else (flash attention, sliding windows) gets the
        2-D mask and builds its own, as in ``generate``.
        """
        import torch

        kind = getattr(self._text_config(), "_attn_implementation", None)
        if not self._plain_cache() or kind not in ("sdpa", "eager"):
            return lambda attend: attend.long()
        if kind == "sdpa":
            return lambda attend: attend[:, None, None, :]
        low = torch.finfo(dtype).min
        return lambda attend: torch.zeros(attend.shape, dtype=dtype, device=attend.device).masked_fill_(~attend, low)[
            :, None, None, :
        ]

    def _sampling(self) -> Any:
        """The logits warpers of this policy's sampling settings, or None for greedy decoding."""
        if self.temperature == 0:
            return None
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        warpers = LogitsProcessorList([TemperatureLogitsWarper(self.temperature)])
        if self.top_k:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers

    def _forward_kwargs(self) -> tuple[dict[str, Any], str]:
        """``logits_to_keep=1`` where the model takes it (only the last position's logits are
        needed), and the name of the forward's cache argument and output: ``cache`` from
        transformers 5.24 on, ``past_key_values`` before (both pass the same cache object)."""
        if self._forward_kw is None:
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            params = inspect.signature(base.forward).parameters
            self._forward_kw = (
                {"logits_to_keep": 1} if "logits_to_keep" in params else {},
                "cache" if "cache" in params else "past_key_values",
            )
        return self._forward_kw

    def _stopped(self, ids: list[int]) -> bool:
        """Whether a row's newest token ends its turn."""
        if ids[-1] in self._stop_set or len(ids) >= self.max_new_tokens:
            return True
        if not self._stop_strings:
            return False
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=False)
        return any(tail.endswith(s) for s in self._stop_strings)

    def _generate(
        self,
        groups: list[list[int]],
        parts: list[tuple[Any, Any, int, Any]],
        device: Any,
        adapter_names: list[str] | None,
        rows: list[list[int]],
        slots: list[Any] | None,
        row_adapters: list[str | None],
        seed: int = 0,
    ) -> list[list[int]]:
        """Each row's new tokens, up to and including the one that ends its turn.

        ``parts`` are the :meth:`_layout` of each group of rows (``groups`` lists their
        indices into ``rows``): each group is prefilled alone, then all rows decode as one
        batch. A plain decode loop rather than ``model.generate``: a row that ends its turn
        leaves the batch at once, so the rows still talking do not pay for the finished
        ones (every live row adds its attention over its cache and its share of each matmul).
        With ``slots``, a finished row's cache is kept for its slot's next turn. Samples come
        from a generator seeded with ``seed``; the global RNG is left alone.
        """
        import torch

        warpers = self._sampling()
        logits_kw, cache_name = self._forward_kwargs()

        def forward(ids: Any, mask: Any, pos: Any, cache: Any, adapters: list[str] | None) -> tuple[Any, Any]:
            """The last position's logits and the cache."""
            extra = {} if adapters is None else {"adapter_names": adapters}
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                **{cache_name: cache},
                **logits_kw,
                **extra,
            )
            return out.logits[:, -1, :], getattr(out, cache_name)

        prefilled, logits, lasts = [], [], []
        for group, (input_ids, attention_mask, reused, past) in zip(groups, parts, strict=True):
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            adapters = None if adapter_names is None else [adapter_names[i] for i in group]
            last_logits, filled = forward(input_ids[:, reused:], attention_mask, positions[:, reused:], past, adapters)
            self.stats["prefills"] += 1
            prefilled.append((filled, attention_mask))
            logits.append(last_logits)
            lasts.append(positions[:, -1])
        cache, mask = kv_cache.merged_cache(prefilled, self.max_new_tokens)
        logits, last = torch.cat(logits), torch.cat(lasts)
        live = [i for group in groups for i in group]  # the batch's rows, as indices into ``rows``
        adapters = None if adapter_names is None else [adapter_names[i] for i in live]
        new: list[list[int]] = [[] for _ in rows]
        # The decode mask has room like the cache. It goes in 4-D ([rows, 1, 1, length]) where
        # the model takes it as is instead of building one per token (see _decode_mask).
        length = mask.shape[1]
        attend = torch.zeros((len(live), length + self.max_new_tokens), dtype=torch.bool, device=mask.device)
        attend[:, :length] = mask.bool()
        decode_mask = self._decode_mask(next(self.model.parameters()).dtype)
        # Rows draw their samples in row order, whatever group they were prefilled in, so a
        # row's sample does not depend on the grouping (which cache reuse changes).
        order = kv_cache.row_order(live, logits.device)
        generator = None if warpers is None else torch.Generator(device=logits.device).manual_seed(seed)
        while True:
            if warpers is None:
                tokens = logits.argmax(-1)
            else:
                probs = torch.softmax(warpers(None, logits.float()), dim=-1)
                if order is None:
                    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                else:
                    tokens = torch.empty(len(live), dtype=torch.long, device=probs.device)
                    tokens[order] = torch.multinomial(probs[order], 1, generator=generator).squeeze(1)
            keep = []
            for j, (i, token) in enumerate(zip(live, tokens.tolist(), strict=True)):
                new[i].append(token)
                if not self._stopped(new[i]):
                    keep.append(j)
                elif slots is not None:  # the cache holds every new token but this last one
                    self._keep_row(cache, j, attend[j, :length], rows[i] + new[i][:-1], slots[i], row_adapters[i])
            if not keep:
                return new
            if len(keep) < len(live):
                index = torch.tensor(keep, device=attend.device)
                cache.batch_select_indices(index)
                attend, last = attend[index], last[index]
                tokens = tokens[index.to(tokens.device)]  # logits sit on the last device of a sharded model
                live = [live[j] for j in keep]
                order = kv_cache.row_order(live, tokens.device)
                if adapters is not None:
                    adapters = [adapters[j] for j in keep]
            attend[:, length] = True
            length += 1
            self.stats["decode_steps"] += 1
            self.stats["kv_reads"] += len(live) * length
            last = last + 1
            logits = forward(tokens[:, None], decode_mask(attend[:, :length]), last[:, None], cache, adapters)[0]

    def _keep_row(self, cache: Any, j: int, mask: Any, ids: list[int], slot: Any, adapter: str | None) -> None:
        """Store batch row ``j``'s real (unpadded) cache entries and the token ids they stand for."""
        if not hasattr(cache, "layers"):
            return
        index = mask.nonzero().flatten()
        # Each layer's own device: a sharded model spreads its layers over several.
        self._kv[slot] = kv_cache.SlotCache(
            ids=ids,
            adapter=adapter,
            keys=[layer.keys[j].index_select(1, index.to(layer.keys.device)) for layer in cache.layers],
            values=[layer.values[j].index_select(1, index.to(layer.values.device)) for layer in cache.layers],
        )

    def identity(self) -> dict[str, Any]:
        """Model, loaded adapters and sampling settings (JSON-able)."""
        return {
            "policy": "hf",
            "model": self.name,
            "adapters": dict(sorted(self.adapters.items())),
            **({"weights": self.weights} if self.weights else {}),
            **(
                {"adapter_weights": dict(sorted(self.adapter_weights.items()))}
                if any(self.adapter_weights.values())
                else {}
            ),
            "obs_format": self.obs_format,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "max_prompt_tokens": self.max_prompt_tokens,
            "reuse_cache": self.reuse_cache,
            **({"system_prompt": self.system_prompt} if self.system_prompt else {}),
            **({"chat_template_kwargs": self.chat_template_kwargs} if self.chat_template_kwargs else {}),
        }
