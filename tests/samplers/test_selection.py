import math

import numpy as np
import pytest

from nnunet_fmabs.samplers import get_sampler, select_cases

SCORES = {"case_b": 0.5, "case_a": 0.5, "case_c": 0.9, "case_d": 0.1}


def test_higher_is_better_order_and_ties():
    he = get_sampler("HE")
    rng = np.random.default_rng(0)
    assert select_cases(he, SCORES, 1, rng) == ["case_c"]
    assert select_cases(he, SCORES, 2, rng) == ["case_c", "case_a"]  # tie 0.5: a before b
    assert select_cases(he, SCORES, 3, rng) == ["case_c", "case_a", "case_b"]


def test_lower_is_better_order_and_ties():
    lc = get_sampler("LC")
    rng = np.random.default_rng(0)
    assert select_cases(lc, SCORES, 2, rng) == ["case_d", "case_a"]
    assert select_cases(lc, SCORES, 3, rng) == ["case_d", "case_a", "case_b"]


def test_k_larger_than_candidates_returns_all():
    rng = np.random.default_rng(0)
    assert select_cases(get_sampler("HER"), SCORES, 10, rng) == [
        "case_c", "case_a", "case_b", "case_d"
    ]
    assert sorted(select_cases(get_sampler("random"), list(SCORES), 4, rng)) == sorted(SCORES)
    assert select_cases(get_sampler("HE"), {}, 2, rng) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_names_sampler_and_case(bad):
    scores = dict(SCORES, case_x=bad)
    with pytest.raises(ValueError, match=r"'HER'.*'case_x'"):
        select_cases(get_sampler("HER"), scores, 2, np.random.default_rng(0))


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(k):
    with pytest.raises(ValueError, match=rf"^k must be a positive integer, got {k}$"):
        select_cases(get_sampler("HE"), SCORES, k, np.random.default_rng(0))


def test_random_is_reproducible_and_order_independent():
    ids = [f"case_{i:02d}" for i in range(30)]
    sampler = get_sampler("random")
    first = select_cases(sampler, ids, 5, np.random.default_rng(42))
    again = select_cases(sampler, list(reversed(ids)), 5, np.random.default_rng(42))
    other = select_cases(sampler, ids, 5, np.random.default_rng(7))
    assert first == again and first != other
    assert len(set(first)) == 5 and set(first) <= set(ids)
    # scores are ignored by the random sampler
    assert select_cases(sampler, {i: 0.0 for i in ids}, 5, np.random.default_rng(42)) == first


def test_scored_sampler_needs_a_mapping_and_unique_ids():
    with pytest.raises(ValueError, match="mapping"):
        select_cases(get_sampler("HE"), ["a", "b"], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="duplicate"):
        select_cases(get_sampler("random"), ["a", "a"], 1, np.random.default_rng(0))


def test_end_to_end_scores_from_probabilities():
    rng = np.random.default_rng(0)
    confident = np.stack([np.full((4, 4, 4), 0.99), np.full((4, 4, 4), 0.01)])
    unsure = np.stack([np.full((4, 4, 4), 0.55), np.full((4, 4, 4), 0.45)])
    for name in ("LC", "HE", "HER"):
        sampler = get_sampler(name)
        scores = {"confident": sampler.score(confident), "unsure": sampler.score(unsure)}
        assert select_cases(sampler, scores, 1, rng) == ["unsure"], name
