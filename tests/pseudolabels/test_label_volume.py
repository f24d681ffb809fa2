"""Issue 5: multi-view pseudo labels with the real LiteMedSAM weights on a phantom scan.

The teacher mask is the ground truth grown by one voxel (an over-segmenting teacher, as the
generalist notes measured); the three views, fused by MV, must beat the teacher itself.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_fmabs.pseudolabels.labeler import dice, label_volume


@pytest.fixture(scope="module")
def phantom_case():
    from nnunet_fmabs.data.phantom import phantom_case

    case = phantom_case((32, 32, 28), seed=1, index=0)
    return case


def test_litemedsam_views_fused_by_mv(phantom_case, tmp_path):
    from nnunet_fmabs.generalists import EmbeddingCache, get_generalist

    image, label = phantom_case[0], phantom_case[1]
    gt = label > 0
    teacher = ndimage.binary_dilation(gt, iterations=1)
    generalist = get_generalist("litemedsam", device="cpu")
    generalist.set_cache(EmbeddingCache(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    out = label_volume(image.astype(np.float32), teacher, generalist, rng, fusion="MV", spacing=(1.25, 1.25, 1.25),
                       cache_key=("phantom", 0))  # the default recipe
    assert out.n_prompted_slices == sum(int(teacher.any(axis=tuple(a for a in range(3) if a != ax)).sum())
                                        for ax in range(3))
    per_view = [dice(v, gt) for v in out.views]
    fused = dice(out.fused, gt)
    assert min(per_view) > 0.75, per_view
    assert fused >= 0.85 and fused > dice(teacher, gt) - 0.02, (fused, dice(teacher, gt))
    # UA is never larger than MV (all three views vs at least two)
    from nnunet_fmabs.pseudolabels import fuse

    assert fuse(out.views, "UA").sum() <= out.fused.sum()
    # a second round on the same slices runs the decoder only (cached embeddings)
    encoded = generalist.stats["encoded_slices"]
    label_volume(image.astype(np.float32), teacher, generalist, np.random.default_rng(1), cache_key=("phantom", 0))
    assert generalist.stats["encoded_slices"] == encoded
