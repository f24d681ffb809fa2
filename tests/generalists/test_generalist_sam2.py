"""SAM 2 / 2.1 and MedSAM2 (issue 15): without the ``[sam2]`` extra the error names the install command;
with it, random weights saved to a file and loaded through the real checkpoint path give exactly the
masks and scores of ``SAM2ImagePredictor`` (MedSAM2: of its own 512-px recipe), and the architectures
have the parameter counts of the official checkpoints."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from nnunet_fmabs.generalists import generalist_class, get_generalist
from nnunet_fmabs.generalists.slices import slice_to_uint8

from .test_generalist_families import _edge_box

HAS_SAM2 = importlib.util.find_spec("sam2") is not None
needs_sam2 = pytest.mark.skipif(not HAS_SAM2, reason='the [sam2] extra is not installed: pip install "nnunet-fmabs[sam2]"')
SAM2_NAMES = [f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("tiny", "small", "base_plus", "large")]


@pytest.mark.parametrize("name", [*SAM2_NAMES, "medsam2"])
def test_without_the_extra_the_error_names_the_install_command(name, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == "sam2" else real(module, *a))
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"not read: the missing package is named first")
    with pytest.raises(ImportError, match=r'needs the \'sam2\' module: pip install "nnunet-fmabs\[sam2\]"'):
        get_generalist(name, checkpoint=checkpoint)


from .conftest import THREE_SHAPES as SHAPES  # noqa: E402


def _random_checkpoint(cls, path, seed):
    """The family's architecture with random weights (seeded), saved as SAM 2's files are: {"model": ...}."""
    torch.manual_seed(seed)
    model = cls.build()
    with torch.no_grad():  # zero-initialised tables (no_mem_embed, position embeddings) made to count
        for tensor in model.state_dict().values():
            if tensor.is_floating_point() and not tensor.any():
                tensor.normal_(0, 0.02)
    torch.save({"model": model.state_dict()}, path)
    return path


@needs_sam2
def test_sam2_matches_sam2_image_predictor(tmp_path, three_slices):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    cls = generalist_class("sam2.1_hiera_tiny")
    path = _random_checkpoint(cls, tmp_path / "sam2.1_hiera_tiny.pt", seed=0)
    slices, boxes, points, negatives = three_slices
    generalist = cls(checkpoint=path, dtype="fp32", batch_size=3)
    masks, scores = generalist.predict(slices, boxes, points, negatives)
    assert [m.shape for m in masks] == SHAPES and all(m.dtype == np.bool_ for m in masks)
    assert generalist.stats["encoded_slices"] == 3 and generalist.stats["encoder_batches"] == 1

    predictor = SAM2ImagePredictor(build_sam2(cls.config, str(path), device="cpu"))
    for image, box, pos, neg, mine, score in zip(slices, boxes, points, negatives, masks, scores):
        predictor.set_image(np.repeat(slice_to_uint8(image)[:, :, None], 3, axis=2))
        theirs, their_score, _ = predictor.predict(
            point_coords=np.concatenate([pos, neg]), point_labels=np.r_[np.ones(len(pos)), np.zeros(len(neg))],
            box=_edge_box(box, image.shape, (1024, 1024)), multimask_output=False)
        assert theirs[0].any() and not theirs[0].all()  # a comparison that could fail
        np.testing.assert_array_equal(mine, theirs[0])
        np.testing.assert_allclose(score, their_score[0], rtol=1e-5, atol=1e-6)


@needs_sam2
def test_sam2_embeddings_from_the_cache_give_the_same_masks(tmp_path, three_slices):
    from nnunet_fmabs.generalists import EmbeddingCache

    cls = generalist_class("sam2.1_hiera_tiny")
    path = _random_checkpoint(cls, tmp_path / "w.pt", seed=1)
    slices, boxes, points, negatives = three_slices
    cache = EmbeddingCache(tmp_path / "cache")
    first = cls(checkpoint=path, dtype="fp32", cache=cache).predict(slices, boxes, points, negatives)
    again = cls(checkpoint=path, dtype="fp32", cache=cache)
    second = again.predict(slices, boxes, points, negatives)
    assert again.stats["encoded_slices"] == 0 and cache.stats.hits == 3
    for a, b in zip(first[0], second[0]):
        np.testing.assert_array_equal(a, b)


@needs_sam2
def test_medsam2_matches_its_512_px_recipe(tmp_path, three_slices):
    """MedSAM2's recipe: PIL bilinear 512 x 512 of the 8-bit RGB slice, / 255, ImageNet mean/std; the SAM 2
    image path at 512 px (features 128, 64, 32); box only, normalised by the slice size; logits > 0."""
    from PIL import Image
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    cls = generalist_class("medsam2")
    path = _random_checkpoint(cls, tmp_path / "MedSAM2_latest.pt", seed=2)
    slices, boxes, points, _ = three_slices
    generalist = cls(checkpoint=path, dtype="fp32")
    masks, scores = generalist.predict(slices, boxes, points)  # points are given and not used
    model = build_sam2(cls.config, str(path), device="cpu", hydra_overrides_extra=list(cls.overrides))
    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = [(128, 128), (64, 64), (32, 32)]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for image, box, mine, score in zip(slices, boxes, masks, scores):
        rgb = Image.fromarray(slice_to_uint8(image)).convert("RGB").resize((512, 512), Image.BILINEAR)
        x = (torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1).float() / 255.0 - mean) / std
        predictor.reset_predictor()
        with torch.no_grad():
            _, feats, _, _ = model._prepare_backbone_features(model.forward_image(x[None]))
        feats[-1] = feats[-1] + model.no_mem_embed
        levels = [f.permute(1, 2, 0).view(1, -1, *size) for f, size in zip(feats, predictor._bb_feat_sizes)]
        predictor._features = {"image_embed": levels[-1], "high_res_feats": levels[:-1]}
        predictor._orig_hw, predictor._is_image_set = [image.shape], True
        theirs, their_score, _ = predictor.predict(box=_edge_box(box, image.shape, (512, 512)), multimask_output=False)
        assert theirs[0].any() and not theirs[0].all()
        np.testing.assert_array_equal(mine, theirs[0])
        np.testing.assert_allclose(score, their_score[0], rtol=1e-5, atol=1e-6)


# Published sizes of the official checkpoints (SAM 2 README, "Model Description", millions of parameters)
OFFICIAL_PARAMETERS = {"sam2.1_hiera_tiny": 38.9, "sam2.1_hiera_small": 46.0, "sam2.1_hiera_base_plus": 80.8,
                       "sam2.1_hiera_large": 224.4, "sam2_hiera_tiny": 38.9, "sam2_hiera_small": 46.0,
                       "sam2_hiera_base_plus": 80.8, "sam2_hiera_large": 224.4, "medsam2": 38.9}


@needs_sam2
@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMETERS))
def test_architectures_have_the_official_parameter_counts(name):
    """Hiera's drop-path schedule calls .item(), so the model cannot be built on the meta device: built on
    the CPU without weights (0.4-1.9 s). Counts are rounded to 0.1 M in the README."""
    model = generalist_class(name).build()
    count = sum(t.numel() for t in model.state_dict().values()) / 1e6
    assert abs(count - OFFICIAL_PARAMETERS[name]) < 0.1, count
