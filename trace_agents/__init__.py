"""trace_agents: the TRACE loop over trace_envs (policies, rollouts, trajectories, training).

Needs the ``train`` extra: ``pip install "trace-rl[train]"`` (torch, transformers, peft,
trl, datasets, accelerate, tokenizers, tqdm). Depends on ``trace_envs`` only through its
public API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__version__ = "0.1.0"


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """``model`` in eval mode (no dropout) inside the block; its training mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def require_train_extra(module: str) -> None:
    """Raise an ImportError that names the extra to install when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"trace_agents needs {module!r}: install the train extra with "
            f'`pip install "trace-rl[train]"` (or `TRACE_EXTRAS=dev,train bash scripts/setup.sh`)'
        )


def no_activation_checkpointing(config_class: type) -> dict[str, bool]:
    """The keyword that turns activation checkpointing off in a TRL/transformers training config.

    TRL's SFT and GRPO configs turn it on by default. transformers 5.24 names the field
    ``activation_checkpointing`` (``gradient_checkpointing`` stays as a deprecated alias);
    older 5.x releases only know ``gradient_checkpointing``.
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}
