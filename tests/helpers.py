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
TAU2_MISSING = f"τ²-bench data not found: set TAU2_DATA_DIR or place it at {TAU2_DIR}"
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

# A tiny random Qwen2 for agent tests. A wide init (0.2, not 0.02) so greedy outputs
# depend on the prompt instead of repeating one token.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 4096, "initializer_range": 0.2}

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
def fake_endpoint(reply):
    """A local OpenAI-compatible server; yields (url, seen).

    ``reply(request_json)`` gives the answer: a string is the message's content, a dict
    is the whole message (for ``tool_calls``), and ``(status, body)`` is sent as it is
    (a JSON body with that HTTP status, as a server's errors are).
    """
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, request))
            answer = reply(request)
            status = 200
            if isinstance(answer, tuple):
                status, payload = answer
            else:
                payload = {"choices": [{"message": answer if isinstance(answer, dict) else {"content": answer}}]}
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
