import math

import numpy as np
import pytest

from nnunet_fmabs.samplers import (
    HERSampler,
    HESampler,
    LCSampler,
    RandomSampler,
    entropy_ratio_score,
    entropy_score,
    least_confidence_score,
    normalized_entropy,
)

# Two classes, 4 voxels as a (C, X, Y, Z) = (2, 2, 2, 1) volume; foreground p1 per voxel:
P1 = np.array([0.5, 0.9, 0.2, 1.0])
TWO = np.stack([1 - P1, P1]).reshape(2, 2, 2, 1)
# ne = -(p ln p + q ln q) / ln 2:
#   0.5 -> 1
#   0.9 -> (0.9*0.1053605 + 0.1*2.3025851) / 0.6931472 = 0.3250830 / 0.6931472 = 0.4689956
#   0.2 -> (0.2*1.6094379 + 0.8*0.2231436) / 0.6931472 = 0.5004024 / 0.6931472 = 0.7219281
#   1.0 -> 0 (0 log 0 = 0)
NE_TWO = [1.0, 0.4689956, 0.7219281, 0.0]

# Three classes, 5 voxels as (3, 5, 1, 1):
THREE = np.array(
    [[1 / 3, 1 / 3, 1 / 3], [1, 0, 0], [0.5, 0.5, 0], [0.6, 0.2, 0.2], [0.8, 0.1, 0.1]]
).T.reshape(3, 5, 1, 1)
# ne = -sum p ln p / ln 3 (ln 3 = 1.0986123):
#   uniform -> 1;  one-hot -> 0;  (.5,.5,0) -> ln2/ln3 = 0.6309298
#   (.6,.2,.2) -> (0.6*0.5108256 + 0.4*1.6094379) / 1.0986123 = 0.9502706 / 1.0986123 = 0.8649735
#   (.8,.1,.1) -> (0.8*0.2231436 + 0.2*2.3025851) / 1.0986123 = 0.6390319 / 1.0986123 = 0.5816719
NE_THREE = [1.0, 0.0, 0.6309298, 0.8649735, 0.5816719]


def test_normalized_entropy_two_and_three_classes():
    ne = normalized_entropy(TWO)
    assert ne.shape == (2, 2, 1)
    np.testing.assert_allclose(ne.ravel(), NE_TWO, atol=1e-6)
    np.testing.assert_allclose(normalized_entropy(THREE).ravel(), NE_THREE, atol=1e-6)
    assert np.isfinite(ne).all() and ne.min() >= 0 and ne.max() <= 1


def test_normalized_entropy_rejects_single_class():
    with pytest.raises(ValueError):
        normalized_entropy(np.ones((1, 2, 2, 2)))


def test_least_confidence_lowest_quartile():
    # two classes: confidences max(p, 1-p) = [0.5, 0.9, 0.8, 1.0]; ceil(4/4) = 1 lowest -> 0.5
    assert least_confidence_score(TWO) == pytest.approx(0.5)
    # three classes: confidences [1/3, 1, 0.5, 0.6, 0.8]; ceil(5/4) = 2 lowest -> (1/3 + 0.5)/2
    assert least_confidence_score(THREE) == pytest.approx(0.4166667, abs=1e-6)
    assert LCSampler().score(THREE) == pytest.approx(5 / 12)


def test_entropy_score():
    # (1 + 0.4689956 + 0.7219281 + 0) / 4 = 0.5477309
    assert entropy_score(TWO) == pytest.approx(0.5477309, abs=1e-6)
    # (1 + 0 + 0.6309298 + 0.8649735 + 0.5816719) / 5 = 0.6155150
    assert HESampler().score(THREE) == pytest.approx(0.6155150, abs=1e-6)


def test_entropy_ratio_score_and_her_threshold():
    assert entropy_ratio_score(TWO, 0.5) == pytest.approx(0.5)  # 1 and 0.72 exceed 0.5
    her = HERSampler()
    # beta(0) = 0.5017: ne > beta for 1, 0.631, 0.865, 0.582 -> 4/5
    assert her.score(THREE, t=0, t_max=10) == pytest.approx(0.8)
    # beta(t_max/2) = 0.5716: 0.582 still above -> 4/5
    assert her.score(THREE, t=5, t_max=10) == pytest.approx(0.8)
    # beta(t_max) = 0.75: only 1 and 0.865 -> 2/5
    assert her.score(THREE, t=10, t_max=10) == pytest.approx(0.4)
    assert her.score(TWO, t=10, t_max=10) == pytest.approx(0.25)


def test_sampler_attributes():
    assert (RandomSampler.name, LCSampler.name, HESampler.name, HERSampler.name) == (
        "random", "LC", "HE", "HER"
    )
    assert LCSampler.higher_is_better is False
    assert HESampler.higher_is_better and HERSampler.higher_is_better
    assert RandomSampler.needs_probabilities is False
    assert LCSampler.needs_probabilities and HESampler.needs_probabilities
    assert RandomSampler().score(None) == 0.0


@pytest.mark.parametrize("sampler", [LCSampler(), HESampler(), HERSampler()], ids=str)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_probabilities_give_nan_scores(sampler, bad_value):
    # a diverged network must not look like a confident one (select_cases then refuses it)
    bad = TWO.copy()
    bad[:, 0, 0, 0] = bad_value
    assert math.isnan(sampler.score(bad))


def test_normalized_entropy_propagates_nan():
    bad = TWO.copy()
    bad[:, 0, 0, 0] = np.nan
    ne = normalized_entropy(bad)
    assert np.isnan(ne[0, 0, 0]) and np.isfinite(ne.ravel()[1:]).all()
