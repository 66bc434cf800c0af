"""OpenAI-compatible endpoints: the agent as a served model, e.g. vLLM with several LoRA adapters.

>>> # vllm serve runs/base/model --enable-lora \\
>>> #     --lora-modules precondition_verification=runs/x/adapters/precondition_verification/adapter
>>> policy = EndpointPolicy("http://localhost:8000/v1", model="runs/base/model")
>>> rollout(policy, "trace/retail-v0", range(100), adapters=lambda env_id, seed: router_choice[seed])

vLLM serves each LoRA adapter under its own model name, so the adapter of a row is the
``model`` field of its request; a row without an adapter asks for the base model. The
requests of one batch go out concurrently (``concurrency`` at a time), and the server
batches them, continuously. Tool calls come back in OpenAI's ``tool_calls`` form and are
turned into the ``<tool_call>`` action text the envs parse. A prompt past the model's
context is resent without older turns (:meth:`EndpointPolicy.complete`).

:func:`load_lora_adapter` and :func:`unload_lora_adapter` swap adapters on a running
server, which is how GRPO training can generate its rollouts there
(:class:`trace_agents.training.ServedRollouts`). Only the standard library is used
(``urllib``): no client package is needed.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trace_agents.chat import TOOL_CLOSE, one_action, template_tools, to_chat, with_system_prompt


class EndpointError(RuntimeError):
    """A request to an endpoint failed; ``status`` is the HTTP status (None: no answer) and ``detail`` its body."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


def _request(url: str, body: Mapping[str, Any] | None, api_key: str | None, timeout: float) -> bytes:
    """POST ``body`` as JSON to ``url`` (a GET when ``body`` is None), with the bearer key from
    ``api_key`` or ``OPENAI_API_KEY``; the response body, or an EndpointError."""
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is None:
        request = urllib.request.Request(url, headers=headers)
    else:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", **headers}
        )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise EndpointError(f"endpoint {url} failed: HTTP {exc.code} {detail}", exc.code, detail) from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        raise EndpointError(f"endpoint {url} failed: {exc}") from exc


def chat_completion(
    base_url: str, body: Mapping[str, Any], api_key: str | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """``POST {base_url}/chat/completions`` and return ``choices[0].message``; clear errors otherwise."""
    url = base_url.rstrip("/") + "/chat/completions"
    raw = _request(url, body, api_key, timeout)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise EndpointError(f"endpoint {url} failed: the response is not JSON ({exc})") from exc
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"endpoint {url} returned no choices[0].message: {str(data)[:200]}") from None
    if not isinstance(message, dict):
        raise EndpointError(f"endpoint {url} returned a message that is not an object: {str(message)[:200]}")
    return message


def load_lora_adapter(
    base_url: str, name: str, path: str | os.PathLike[str], api_key: str | None = None, timeout: float = 120.0
) -> None:
    """Have a vLLM server load the PEFT adapter at ``path`` (a path the server can read) as model ``name``.

    The server must run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``
    (``POST /v1/load_lora_adapter``); the adapter's rank must fit its ``--max-lora-rank``.
    """
    url = base_url.rstrip("/") + "/load_lora_adapter"
    try:
        _request(url, {"lora_name": name, "lora_path": str(path)}, api_key, timeout)
    except EndpointError as exc:
        if exc.status == 404 and '"Not Found"' in exc.detail:  # the route itself is missing
            raise EndpointError(
                f"{exc}. Runtime LoRA loading needs a vLLM server started with --enable-lora "
                f"and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                exc.status,
                exc.detail,
            ) from exc
        raise


def unload_lora_adapter(base_url: str, name: str, api_key: str | None = None, timeout: float = 60.0) -> None:
    """Have a vLLM server drop the adapter served as ``name`` (``POST /v1/unload_lora_adapter``)."""
    _request(base_url.rstrip("/") + "/unload_lora_adapter", {"lora_name": name}, api_key, timeout)


# vLLM fills sampling settings a request leaves out from the model's generation_config
# (Qwen2.5-Instruct: top_k 20, repetition_penalty 1.05). Training assumes plain tempered
# sampling, as HFPolicy does, so requests to vLLM spell these out.
VLLM_PLAIN_SAMPLING: dict[str, Any] = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
# A served turn ends where HFPolicy ends one: right after the first tool call, with the
# closing tag kept (vLLM's tool parser needs it; ``include_stop_str_in_output`` is vLLM's).
# Text past it would be cut here anyway (chat.one_action); stopping saves the server the
# tokens. One difference: a malformed call after the first no longer makes vLLM's tool
# parser reject the whole message, so the first call arrives parsed (see action_text).
VLLM_ONE_ACTION: dict[str, Any] = {"stop": [TOOL_CLOSE], "include_stop_str_in_output": True}
# What GRPO's and ``trace run``'s requests to vLLM add to the OpenAI fields.
VLLM_ROLLOUTS: dict[str, Any] = {**VLLM_PLAIN_SAMPLING, **VLLM_ONE_ACTION}


def load_fresh(base_url: str, name: str, path: str | os.PathLike[str], api_key: str | None = None) -> None:
    """:func:`load_lora_adapter`, after unloading ``name`` if a killed run left it loaded (vLLM refuses
    to load a name twice)."""
    try:
        unload_lora_adapter(base_url, name, api_key)
    except EndpointError:
        pass  # not loaded: the usual case
    load_lora_adapter(base_url, name, path, api_key)


def served_base_model(base_url: str, api_key: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """The one base model a server lists at ``GET {base_url}/models`` (vLLM lists LoRA adapters there
    too, with their base as ``parent``); its entry, with ``id`` and, from vLLM, ``root``."""
    url = base_url.rstrip("/") + "/models"
    raw = _request(url, None, api_key, timeout)
    try:
        data = json.loads(raw)["data"]
        bases = [m for m in data if isinstance(m, dict) and "id" in m and not m.get("parent")]
    except (ValueError, KeyError, TypeError) as exc:
        raise EndpointError(f"endpoint {url} did not list models as OpenAI's API does ({exc!r})") from exc
    # One model, perhaps under several --served-model-name aliases (one root).
    if len({m.get("root") or m["id"] for m in bases}) != 1:
        raise EndpointError(
            f"endpoint {url} serves {len(bases)} base models "
            f"({', '.join(str(m['id']) for m in bases) or 'none'}); expected exactly one"
        )
    return bases[0]


def past_context(exc: EndpointError) -> bool:
    """Whether a server refused a request because its prompt does not fit the model's context
    (vLLM: HTTP 400, "maximum context length" or "maximum model length")."""
    text = exc.detail.lower()
    return exc.status == 400 and ("maximum context length" in text or "maximum model length" in text)


def without_older_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``messages`` without about half of the turns between the opening and the latest; None when
    only the opening (system messages and first user message) and one exchange are left.

    The cut is made before an assistant message that answers a user message, so every tool
    result keeps its call and roles still alternate after the opening.
    """
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    if head < len(messages) and messages[head]["role"] == "user":
        head += 1  # the task: the user's first message is always kept
    rest = messages[head:]
    cuts = [k for k in range(1, len(rest)) if rest[k]["role"] == "assistant" and rest[k - 1]["role"] == "user"]
    if not cuts:
        return None
    return messages[:head] + rest[cuts[(len(cuts) - 1) // 2] :]


def action_text(message: Mapping[str, Any]) -> str:
    """The env action for a chat-completion message: its first tool call as ``<tool_call>``, else its text."""
    calls = message.get("tool_calls") or []
    if calls:
        fn = calls[0].get("function", {})
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                pass  # malformed arguments go to the env as they are: it reports the format error
        return "<tool_call>\n" + json.dumps({"name": fn.get("name", ""), "arguments": args}) + "\n</tool_call>"
    return one_action(str(message.get("content") or ""))  # text past a first tool call is dropped, as in-process


class EndpointPolicy:
    """A policy served behind an OpenAI-compatible chat endpoint (see the module docstring).

    A row's adapter is a served model name. :meth:`load_adapter` also loads a local PEFT
    adapter into the server (vLLM's runtime LoRA loading) under ``adapter_prefix`` + its
    name, and rows then ask for it by the local name, as with :class:`HFPolicy`;
    :meth:`close` unloads what it loaded.

    Args:
        base_url: The server's OpenAI-compatible base URL, ending in ``/v1``
            (``http://localhost:8000/v1``).
        model: The served name of the base model: what rows without an adapter ask for.
        api_key: The bearer key; None reads ``$OPENAI_API_KEY``, and ``""`` sends no key.
        obs_format: ``"chat"`` (the env's system message, and the full tool schemas sent as
            ``tools``) or ``"compact"`` (one signature line per tool, no ``tools`` field).
        temperature: Sampling temperature, sent as is (0: the server decodes greedily).
        top_p: Nucleus sampling mass, sent as is (1.0: off).
        max_tokens: The most tokens the server generates per turn (>= 1).
        seed: Base of the per-request seeds: row ``i`` of call ``n`` sends
            ``seed + 100_003 * n + i``, so a rerun repeats its samples where the server honours seeds.
        concurrency: Requests of one batch in flight at once (>= 1); the server batches them.
        timeout: Seconds to wait for one response.
        system_prompt: Instructions put before the env's system message (the text GEPA evolves);
            None: none.
        adapter_prefix: Put before a local adapter's name to make its served name, so runs
            sharing a server do not collide (see :meth:`load_adapter`).
        name: The model as :meth:`identity` names it, which keys stored episodes; None: ``model``.
        extra_body: More request fields, sent with every request and recorded in
            :meth:`identity` (e.g. :data:`VLLM_ROLLOUTS`); they override the fields above.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        obs_format: str = "chat",
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int = 0,
        concurrency: int = 16,
        timeout: float = 120.0,
        system_prompt: str | None = None,
        adapter_prefix: str = "",
        name: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if obs_format not in ("compact", "chat"):
            raise ValueError(f"obs_format must be 'compact' or 'chat', got {obs_format!r}")
        if concurrency < 1 or max_tokens < 1:
            raise ValueError("concurrency and max_tokens must be >= 1")
        self.base_url, self.model, self.api_key = base_url, model, api_key
        self.obs_format, self.temperature, self.top_p = obs_format, float(temperature), float(top_p)
        self.max_tokens, self.seed, self.concurrency, self.timeout = max_tokens, seed, concurrency, timeout
        self.system_prompt, self.adapter_prefix = system_prompt, adapter_prefix
        self.name = name or model  # the model in identity(): stored episodes are keyed by it
        self.extra_body = dict(extra_body or {})  # more request fields, e.g. VLLM_ROLLOUTS
        self.adapters: dict[str, str] = {}  # local name -> the adapter directory loaded under it
        self.adapter_weights: dict[str, str | None] = {}  # local name -> digest of its weights
        self._calls = 0
        self.shortened = 0  # requests resent without older turns (see complete)
        self._lock = threading.Lock()

    def served_name(self, adapter: str) -> str:
        """The model name a row with ``adapter`` asks for: a loaded adapter's served name, else ``adapter``."""
        return self.adapter_prefix + adapter if adapter in self.adapters else adapter

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load the PEFT adapter at ``path`` into the server as ``adapter_prefix + name``.

        ``path`` is resolved here, so the server must see the same filesystem (or a shared
        disk at the same path).
        """
        from pathlib import Path

        from trace_agents.trajectories import weights_id

        load_fresh(self.base_url, self.adapter_prefix + name, Path(path).resolve(), self.api_key)
        self.adapters[name], self.adapter_weights[name] = weights_id(path)

    def close(self) -> None:
        """Unload every adapter :meth:`load_adapter` loaded (a failure warns; the rest still unload)."""
        import warnings

        for name in list(self.adapters):
            try:
                unload_lora_adapter(self.base_url, self.served_name(name), self.api_key)
            except EndpointError as exc:
                warnings.warn(f"could not unload adapter {self.served_name(name)!r}: {exc}", stacklevel=2)
            del self.adapters[name]
            self.adapter_weights.pop(name, None)

    def forget(self, slot: Any = None) -> None:
        """Nothing to drop: the server keeps no per-episode state of ours (as :meth:`HFPolicy.forget`)."""

    def request(self, info: Mapping[str, Any], adapter: str | None, row: int) -> dict[str, Any]:
        """The request body for one row (``adapter``: see :meth:`served_name`; None is the base model)."""
        messages = with_system_prompt(to_chat(info["messages"], info["tools"], self.obs_format), self.system_prompt)
        for m in messages:  # the wire format wants arguments as JSON strings
            for call in m.get("tool_calls", []):
                call["function"] = {**call["function"], "arguments": json.dumps(call["function"]["arguments"])}
        body: dict[str, Any] = {
            "model": self.served_name(adapter) if adapter else self.model,
            "messages": messages,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed + 100_003 * self._calls + row,
            **self.extra_body,
        }
        tools = template_tools(info["tools"], self.obs_format)
        if tools:
            body["tools"] = tools
        return body

    def act_batch(self, infos: list[dict[str, Any]], adapters: list[str | None] | None = None) -> list[str]:
        if adapters is not None and len(adapters) != len(infos):
            raise ValueError(f"got {len(adapters)} adapter names for {len(infos)} infos")
        names = adapters or [None] * len(infos)
        bodies = [self.request(info, name, i) for i, (info, name) in enumerate(zip(infos, names, strict=True))]
        self._calls += 1
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(len(bodies), 1))) as pool:
            messages = list(pool.map(self.complete, bodies))
        return [action_text(m) for m in messages]

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The server's message for ``body``. A prompt past the model's context is resent without
        older turns (:func:`without_older_turns`; the opening stays), as :class:`HFPolicy` keeps the
        latest tokens, instead of failing the whole batch."""
        while True:
            try:
                return chat_completion(self.base_url, body, self.api_key, self.timeout)
            except EndpointError as exc:
                if not past_context(exc):
                    raise
                shorter = without_older_turns(body["messages"])
                if shorter is None:
                    raise EndpointError(
                        f"{exc} (even with only the opening and the latest exchange: "
                        f"serve the model with a longer --max-model-len)",
                        exc.status,
                        exc.detail,
                    ) from exc
                body = {**body, "messages": shorter}
                with self._lock:  # rows run in the pool's threads
                    self.shortened += 1

    def identity(self) -> dict[str, Any]:
        """What generates (the model, its adapters, the sampling settings), not where: a run resumed on
        another server finds its stored episodes."""
        return {
            "policy": "endpoint",
            "model": self.name,
            "obs_format": self.obs_format,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            **({"adapters": dict(sorted(self.adapters.items()))} if self.adapters else {}),
            **({"adapter_weights": dict(sorted(self.adapter_weights.items()))} if self.adapters else {}),
            **({"extra_body": dict(sorted(self.extra_body.items()))} if self.extra_body else {}),
            **({"system_prompt": self.system_prompt} if self.system_prompt else {}),
        }
