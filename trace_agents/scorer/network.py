"""The scorer's policy network: scores every admissible action from cached text embeddings.

Inputs are padded batches (``B`` decisions, up to ``N`` candidates each):

- ``state``: ``(B, 5, E)``: the four state texts and the mean of the agent's earlier actions;
- ``state_numbers``: ``(B, S)``;
- ``candidates``: ``(B, N, T, E)``: each candidate's text, its record's gloss and the
  customer's sentences that name its ids (``T = candidate_texts``, 3);
- ``candidate_numbers``: ``(B, N, F)``; ``mask``: ``(B, N)``, True where a candidate is real.

The state and each candidate are projected to ``hidden`` units, combined (sum, product),
then one attention layer across a decision's candidates lets each score depend on the
others (which of two variants is cheaper, which order the customer named), and a linear
head gives one score per candidate. Every trainable layer is an ``nn.Linear`` named in
:data:`LINEAR_LAYERS`, so LoRA adapters (PEFT) can target all of them; the batch is the
first dimension of every layer's input, which PEFT's mixed-adapter batches require.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trace_agents.scorer.features import CANDIDATE_FEATURES, STATE_FEATURES

LINEAR_LAYERS = ("state_in", "candidate_in", "mix", "query", "key", "value", "attend_out", "ff_in", "ff_out", "head")


@dataclass
class ScorerNetConfig:
    """Sizes of :class:`ScorerNet` (saved as ``config.json`` beside the weights)."""

    embed_dim: int = 384
    state_texts: int = 5
    state_features: int = len(STATE_FEATURES)
    candidate_texts: int = 3  # the action, its record's gloss, the customer's sentences with its ids
    candidate_features: int = len(CANDIDATE_FEATURES)
    hidden: int = 128
    heads: int = 4
    attention: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScorerNet(nn.Module):
    """Scores ``(B, N)`` candidates; padded candidates get ``-inf``."""

    def __init__(self, config: ScorerNetConfig) -> None:
        super().__init__()
        if config.hidden % config.heads:
            raise ValueError(f"hidden ({config.hidden}) must be a multiple of heads ({config.heads})")
        self.config = config
        e, h = config.embed_dim, config.hidden
        self.state_in = nn.Linear(config.state_texts * e + config.state_features, h)
        self.candidate_in = nn.Linear(config.candidate_texts * e + config.candidate_features, h)
        self.mix = nn.Linear(3 * h, h)
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.attend_out = nn.Linear(h, h)
        self.ff_in = nn.Linear(h, 2 * h)
        self.ff_out = nn.Linear(2 * h, h)
        self.head = nn.Linear(h, 1)
        self.norm1 = nn.LayerNorm(h)
        self.norm2 = nn.LayerNorm(h)
        self.act = nn.GELU()

    def forward(
        self,
        state: torch.Tensor,
        state_numbers: torch.Tensor,
        candidates: torch.Tensor,
        candidate_numbers: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        b, n = mask.shape
        s = self.act(self.state_in(torch.cat([state.flatten(1), state_numbers], dim=-1)))  # (B, H)
        c = self.act(self.candidate_in(torch.cat([candidates.flatten(2), candidate_numbers], dim=-1)))  # (B, N, H)
        s = s.unsqueeze(1).expand(-1, n, -1)
        x = self.act(self.mix(torch.cat([c, s, c * s], dim=-1)))
        if self.config.attention:
            heads, d = self.config.heads, self.config.hidden // self.config.heads
            q = self.query(x).view(b, n, heads, d).transpose(1, 2)
            k = self.key(x).view(b, n, heads, d).transpose(1, 2)
            v = self.value(x).view(b, n, heads, d).transpose(1, 2)
            logits = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, heads, N, N)
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
            attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
            x = self.norm1(x + self.attend_out(attended))
        x = self.norm2(x + self.ff_out(self.act(self.ff_in(x))))
        scores = self.head(x).squeeze(-1)
        return scores.masked_fill(~mask, float("-inf"))
