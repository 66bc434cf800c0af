"""Helpers shared by the test modules (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trace_envs import registered_ids

# τ²-bench data: the project's CI has ../shared/tau2 beside the checkout. Tests that need
# it skip with this reason when it is absent (and an explicit TAU2_DATA_DIR wins).
TAU2_DIR = Path(__file__).resolve().parents[2] / "shared" / "tau2"
TAU2_MISSING = (
    f"τ²-bench data not found: set TAU2_DATA_DIR to a tau2-bench checkout's data/tau2 directory "
    f"(CI has it at {TAU2_DIR})"
)
if TAU2_DIR.is_dir():
    os.environ.setdefault("TAU2_DATA_DIR", str(TAU2_DIR))
HAVE_TAU2 = bool(os.environ.get("TAU2_DATA_DIR"))
NEEDS_DATA = {"trace/tau2-retail-v0"}


def _param(env_id: str):
    if env_id in NEEDS_DATA and not HAVE_TAU2:
        return pytest.param(env_id, marks=pytest.mark.skip(reason=TAU2_MISSING))
    return env_id


# Every registered id as pytest params; ids needing absent data are skipped, with the reason.
ID_PARAMS = [_param(i) for i in registered_ids()]
# The registered ids that can be made here (e.g. what a subprocess may be asked to play).
RUNNABLE_IDS = [i for i in registered_ids() if HAVE_TAU2 or i not in NEEDS_DATA]

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
def quiet_peft():
    """PEFT's constructor reads transformers' deprecated `is_gradient_checkpointing`: ignore exactly that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def two_adapter_model(base, seed=1):
    """A PeftModel over a copy of ``base`` with two random LoRA adapters on q_proj, "pre" and "data"."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    with quiet_peft():
        torch.manual_seed(seed)
        config = dict(r=4, target_modules=["q_proj"], init_lora_weights=False)
        model = get_peft_model(copy.deepcopy(base), LoraConfig(**config), adapter_name="pre")
        model.add_adapter("data", LoraConfig(**config))
    return model


# Slow end-to-end tests run in a short configuration unless TRACE_SHORT=0 (scripts/test.sh sets 1).
SHORT = os.environ.get("TRACE_SHORT", "1") != "0"


@contextlib.contextmanager
def fake_endpoint(reply, get=None):
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


class StandInVLLM:
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
        import hashlib

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


def fake_adapter(path, content=b"weights"):
    """A directory that looks like a saved PEFT adapter to :class:`StandInVLLM`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text("{}", encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(content)
    return path
