"""Next-token rules shared by both engines."""
import numpy as np
import pytest

from pretrain.generate.sampling import SamplingConfig, apply_repetition_penalty, next_token


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0])
    assert next_token(logits, np.array([], dtype=np.int64), SamplingConfig(greedy=True), np.random.default_rng(0)) == 1


def test_top_k_one_equals_greedy_and_top_k_restricts():
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 2.0, 3.0, 0.5, 2.5])
    hist = np.array([], dtype=np.int64)
    assert all(next_token(logits, hist, SamplingConfig(top_k=1), rng) == 2 for _ in range(20))
    draws = {next_token(logits, hist, SamplingConfig(top_k=2), rng) for _ in range(200)}
    assert draws == {2, 4}


def test_top_p_keeps_smallest_nucleus():
    rng = np.random.default_rng(1)
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    draws = {next_token(np.log(probs), np.array([], dtype=np.int64), SamplingConfig(top_p=0.75), rng)
             for _ in range(300)}
    assert draws == {0, 1}


def test_repetition_penalty_lowers_seen_tokens():
    logits = np.array([2.0, -1.0, 1.0])
    out = apply_repetition_penalty(logits, np.array([0, 1, 0]), 2.0)
    np.testing.assert_allclose(out, [1.0, -2.0, 1.0])
    hist = np.array([0, 0, 0])
    assert next_token(np.array([2.0, 1.5]), hist, SamplingConfig(greedy=True, repetition_penalty=2.0),
                      np.random.default_rng(0)) == 1


def test_seeded_sampling_is_reproducible_and_validated():
    logits = np.random.default_rng(0).normal(size=50)
    hist = np.array([], dtype=np.int64)
    a = [next_token(logits, hist, SamplingConfig(temperature=0.7), np.random.default_rng(5)) for _ in range(5)]
    b = [next_token(logits, hist, SamplingConfig(temperature=0.7), np.random.default_rng(5)) for _ in range(5)]
    assert a == b
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0).validate()


def test_banned_ids_are_never_picked():
    logits = np.array([5.0, 4.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    banned = np.array([0, 1])
    assert next_token(logits, np.array([], dtype=np.int64), SamplingConfig(greedy=True), rng, banned) == 2
    draws = {next_token(logits, np.array([], dtype=np.int64), SamplingConfig(), rng, banned) for _ in range(200)}
    assert draws <= {2, 3}
