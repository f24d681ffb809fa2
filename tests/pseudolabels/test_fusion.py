import numpy as np
import pytest

from nnunet_fmabs.pseudolabels.fusion import apply_expert_labels, fuse


def _all_vote_combinations():
    # voxel i of a (2, 2, 2) volume gets the votes of the 3 bits of i: view j says bit j
    index = np.arange(8).reshape(2, 2, 2)
    return [((index >> j) & 1).astype(bool) for j in range(3)], index


def test_unanimous_agreement_truth_table():
    masks, _ = _all_vote_combinations()
    fused = fuse(masks, "UA")
    assert fused.dtype == np.bool_
    # only 0b111 (all three views)
    assert fused.ravel().tolist() == [False] * 7 + [True]


def test_majority_voting_truth_table():
    masks, _ = _all_vote_combinations()
    fused = fuse(masks, "MV")
    # at least two bits: 3 (011), 5 (101), 6 (110), 7 (111)
    expected = [False, False, False, True, False, True, True, True]
    assert fused.ravel().tolist() == expected


def test_fuse_accepts_integer_masks():
    masks, _ = _all_vote_combinations()
    assert np.array_equal(fuse([m.astype(np.uint8) for m in masks], "MV"), fuse(masks, "MV"))


def test_fuse_errors():
    masks, _ = _all_vote_combinations()
    with pytest.raises(ValueError, match="UA, MV"):
        fuse(masks, "AND")
    with pytest.raises(ValueError, match="3 masks"):
        fuse(masks[:2], "UA")
    with pytest.raises(ValueError, match="shape"):
        fuse([masks[0], masks[1], np.zeros((2, 2, 3), bool)], "MV")
    with pytest.raises(ValueError, match="3D"):
        fuse([m[0] for m in masks], "MV")


def test_expert_labels_override_pseudo_labels():
    fused = np.ones((3, 3, 3), dtype=bool)  # generalist says foreground everywhere
    ignore = 2
    cross = np.full((3, 3, 3), ignore, dtype=np.int16)
    cross[1] = 0  # the expert's plane 1 on axis 0: background ...
    cross[1, 1, 1] = 1  # ... except its centre
    cross[0, 0, 0] = -1  # padding is not a label either
    out = apply_expert_labels(fused, cross, ignore)
    assert out.dtype == np.uint8
    expected = np.ones((3, 3, 3), dtype=np.uint8)
    expected[1] = 0
    expected[1, 1, 1] = 1
    assert np.array_equal(out, expected)
    assert fused.all()  # input untouched


def test_expert_labels_fill_where_pseudo_label_is_background():
    fused = np.zeros((2, 2, 2), dtype=bool)
    cross = np.full((2, 2, 2), 255, dtype=np.uint8)
    cross[:, 0, 0] = 1
    out = apply_expert_labels(fused, cross, ignore_value=255)
    assert out.sum() == 2 and out[:, 0, 0].tolist() == [1, 1]
    with pytest.raises(ValueError, match="shape"):
        apply_expert_labels(fused, cross[:1], 255)
