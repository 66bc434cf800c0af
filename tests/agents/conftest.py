"""Fixtures of the trace_agents tests: a tiny model, stand-in servers and adapters.

Fixtures that are tools (``fake_endpoint``, ``stand_in_vllm``, ``fake_adapter``,
``two_adapter_model``, ``quiet_peft``) return the factory, class or context manager, so a
test calls them as it needs: ``with fake_endpoint(reply) as (url, seen): ...``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# A tiny random Qwen2 for agent tests. A wide init (0.2, not 0.02) so greedy outputs
# depend on the prompt instead of repeating one token.
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
    "initializer_range": 0.2,
}


@contextlib.contextmanager
def _quiet_peft():
    """PEFT's constructor reads transformers' deprecated `is_gradient_checkpointing`: ignore exactly that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _two_adapter_model(base, seed=1):
    """A PeftModel over a copy of ``base`` with two random LoRA adapters on q_proj, "pre" and "data"."""
    import torch
    from peft import LoraConfig, get_peft_model

    with _quiet_peft():
        torch.manual_seed(seed)
        config = dict(r=4, target_modules=["q_proj"], init_lora_weights=False)
        model = get_peft_model(copy.deepcopy(base), LoraConfig(**config), adapter_name="pre")
        model.add_adapter("data", LoraConfig(**config))
    return model


@contextlib.contextmanager
def _fake_endpoint(reply, get=None):
    """A local OpenAI-compatible server; yields (url, seen).

    ``reply(request_json)`` gives the answer to a POST: a string is the message's content,
    a dict is the whole message (for ``tool_calls``), and ``(status, body)`` is sent as it
    is (a JSON body with that HTTP status, as a server's errors are). ``get(path)`` answers
    a GET with ``(status, body)``; without it a GET is a 404.
    """
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def send(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, request))
            answer = reply(request)
            if isinstance(answer, tuple):
                self.send(*answer)
            else:
                self.send(200, {"choices": [{"message": answer if isinstance(answer, dict) else {"content": answer}}]})

        def do_GET(self):  # noqa: N802
            seen.append((self.path, None))
            self.send(*(get(self.path) if get else (404, {"detail": "Not Found"})))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


class _StandInVLLM:
    """Answers like a vLLM server with runtime LoRA loading: a name loads once, only loaded
    names unload, and ``GET /v1/models`` lists the base model (``root`` its path) and the
    loaded adapters (``parent`` the base). Use it as ``fake_endpoint(server, server.get)``.

    Chat requests are logged as ``("chat", model)`` and answered by ``chat(request)``.
    """

    def __init__(self, chat, base="base", root="/models/base"):
        self.loaded = {}  # name -> hash of the adapter's weights when it was loaded
        self.log = []
        self.chat, self.base, self.root = chat, base, root

    def get(self, path):
        if path.rstrip("/").endswith("/models"):
            adapters = [{"id": name, "object": "model", "root": name, "parent": self.base} for name in self.loaded]
            return 200, {
                "object": "list",
                "data": [{"id": self.base, "object": "model", "root": self.root, "parent": None}, *adapters],
            }
        return 404, {"detail": "Not Found"}

    def __call__(self, request):
        if "lora_path" in request:
            name, path = request["lora_name"], Path(request["lora_path"])
            if name in self.loaded:
                return 400, {"message": f"The lora adapter '{name}' has already been loaded."}
            weights = path / "adapter_model.safetensors"
            if not (weights.exists() and (path / "adapter_config.json").exists()):
                return 404, {"message": f"No adapter found for {path}"}
            self.loaded[name] = hashlib.sha1(weights.read_bytes()).hexdigest()
            self.log.append(("load", name))
            return 200, {}
        if "lora_name" in request:
            if self.loaded.pop(request["lora_name"], None) is None:
                return 404, {"message": f"The lora adapter '{request['lora_name']}' cannot be found."}
            self.log.append(("unload", request["lora_name"]))
            return 200, {}
        if request["model"] != self.base and request["model"] not in self.loaded:
            return 404, {"message": f"The model `{request['model']}` does not exist."}
        self.log.append(("chat", request["model"]))
        return self.chat(request)


def _fake_adapter(path, content=b"weights"):
    """A directory that looks like a saved PEFT adapter to the stand-in vLLM server."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text("{}", encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(content)
    return path


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    """The tiny random Qwen2's size and init, for ``models.build_model(tok, **tiny_config)``."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tok():
    """A small tokenizer trained on env text (agent tests; needs the train extra)."""
    from trace_agents import models

    return models.build_tokenizer(models.corpus(30), vocab_size=1024)


@pytest.fixture(scope="module")
def base(tok):
    """A tiny random Qwen2 (seeded) on ``tok``, a fresh one per test module."""
    # Per module: loading an adapter into it (HFPolicy.load_adapter) changes it in place,
    # and that must not leak into other modules.
    import torch

    from trace_agents import models

    torch.manual_seed(0)
    return models.build_model(tok, **TINY)


@pytest.fixture(scope="session")
def quiet_peft() -> Callable[[], contextlib.AbstractContextManager]:
    """A context manager that silences exactly PEFT's `is_gradient_checkpointing` deprecation warning."""
    return _quiet_peft


@pytest.fixture(scope="session")
def two_adapter_model() -> Callable:
    """``two_adapter_model(base, seed=1)``: a PeftModel over a copy of base with LoRA adapters "pre" and "data"."""
    return _two_adapter_model


@pytest.fixture(scope="session")
def fake_endpoint() -> Callable:
    """``fake_endpoint(reply, get=None)``: a context manager serving an OpenAI-compatible API; yields (url, seen)."""
    return _fake_endpoint


@pytest.fixture(scope="session")
def stand_in_vllm() -> type:
    """The class of a stand-in vLLM server with runtime LoRA loading: ``fake_endpoint(server, server.get)``."""
    return _StandInVLLM


@pytest.fixture(scope="session")
def fake_adapter() -> Callable:
    """``fake_adapter(path, content=b"weights")``: a directory that looks like a saved PEFT adapter."""
    return _fake_adapter
