"""trace_agents: the TRACE loop over trace_envs (policies, rollouts, trajectories, training).

Needs the ``train`` extra: ``pip install "trace-rl[train]"`` (torch, transformers, peft,
trl, datasets, accelerate, tokenizers, tqdm). Depends on ``trace_envs`` only through its
public API.
"""

from __future__ import annotations

__version__ = "0.1.0"


def require_train_extra(module: str) -> None:
    """Raise an ImportError that names the extra to install when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"trace_agents needs {module!r}: install the train extra with "
                          f"`pip install \"trace-rl[train]\"` (or `TRACE_EXTRAS=dev,train bash scripts/setup.sh`)")
