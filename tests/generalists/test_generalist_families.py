"""Every family: random weights saved to a file, loaded through the real checkpoint path, run on
slices of different sizes, and compared with that family's own predictor on the same input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_fmabs.generalists.slices import slice_to_uint8
from nnunet_fmabs.generalists.weights import WEIGHTS

from .conftest import THREE_SHAPES as SHAPES


@pytest.fixture(scope="module")
def runs(random_checkpoints, three_slices):
    """Each family's masks and scores on the three slices (fp32, points given where used)."""
    slices, boxes, points, negatives = three_slices
    results = {}
    for name, (cls, path) in random_checkpoints.items():
        generalist = cls(checkpoint=path, dtype="fp32", batch_size=3)
        masks, scores = generalist.predict(slices, boxes, points, negatives)
        results[name] = (generalist, masks, scores)
    return results


@pytest.mark.parametrize("name", ["litemedsam", "mobilesam", "sam", "medsam"])
def test_family_loads_random_weights_and_answers_each_slice_at_its_size(name, runs, random_checkpoints):
    generalist, masks, scores = runs[name]
    _, path = random_checkpoints[name]
    assert generalist.checkpoint == path
    assert not any(p.requires_grad for p in generalist.model.parameters())
    assert not generalist.model.training
    loaded = torch.load(path, weights_only=True)
    for key, value in generalist.model.state_dict().items():  # the file's weights are in use
        if key in loaded:
            assert torch.equal(value.cpu(), loaded[key]), key
    assert [m.shape for m in masks] == SHAPES
    assert all(m.dtype == np.bool_ for m in masks)
    assert scores.shape == (3,) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert generalist.stats["encoded_slices"] == 3 and generalist.stats["encoder_batches"] == 1


def _edge_box(box, shape, resized):
    """The box to give an upstream predictor (which scales both corners) so that it lands where ours does:
    our far corner is (x1 + 1) s - 1 (box edges scaled, issue 12 defect 1), i.e. x1 + 1 - 1 / s before scaling."""
    (h, w), (rh, rw) = shape, resized
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    return np.array([x0, y0, x1 + 1 - w / rw, y1 + 1 - h / rh])


def _predictor_masks(predictor_cls, model, slices, boxes, points, negatives, use_points=True):
    masks, scores = [], []
    for image, box, pos, neg in zip(slices, boxes, points, negatives):
        predictor = predictor_cls(model)
        predictor.set_image(np.repeat(slice_to_uint8(image)[:, :, None], 3, axis=2))
        box = _edge_box(box, image.shape, predictor.input_size)
        coords = np.concatenate([pos, neg]) if use_points else None
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]) if use_points else None
        mask, score, _ = predictor.predict(point_coords=coords, point_labels=labels, box=box,
                                           multimask_output=False)
        masks.append(mask[0])
        scores.append(score[0])
    return masks, np.array(scores)


def test_sam_matches_sam_predictor(runs, random_checkpoints, three_slices):
    from segment_anything import SamPredictor
    from segment_anything.build_sam import _build_sam

    from .conftest import TINY_ENCODER

    _, path = random_checkpoints["sam"]
    embed_dim, depth, heads, global_attention = TINY_ENCODER
    reference = _build_sam(embed_dim, depth, heads, list(global_attention), checkpoint=str(path))
    expected, expected_scores = _predictor_masks(SamPredictor, reference, *three_slices)
    _, masks, scores = runs["sam"]
    assert any(m.any() and not m.all() for m in expected)  # a test that could fail
    for mine, theirs in zip(masks, expected):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_mobilesam_matches_its_predictor(runs, random_checkpoints, three_slices):
    from mobile_sam import SamPredictor, build_sam_vit_t

    _, path = random_checkpoints["mobilesam"]
    reference = build_sam_vit_t(checkpoint=str(path))
    reference.eval()  # build_sam_vit_t calls eval() before loading: cached attention biases are stale
    expected, expected_scores = _predictor_masks(SamPredictor, reference, *three_slices)
    _, masks, scores = runs["mobilesam"]
    assert any(m.any() and not m.all() for m in expected)
    for mine, theirs in zip(masks, expected):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_medsam_matches_medsam_inference_recipe(runs, random_checkpoints, three_slices):
    """MedSAM_Inference.py: 1024 x 1024 bicubic resize, min-max [0, 1], box only, sigmoid > 0.5."""
    from segment_anything.build_sam import _build_sam
    from skimage import transform

    from .conftest import TINY_ENCODER

    _, path = random_checkpoints["medsam"]
    embed_dim, depth, heads, global_attention = TINY_ENCODER
    medsam_model = _build_sam(embed_dim, depth, heads, list(global_attention), checkpoint=str(path))
    slices, boxes, _, _ = three_slices
    _, masks, scores = runs["medsam"]
    for image, box, mine in zip(slices, boxes, masks):
        img_3c = np.repeat(slice_to_uint8(image)[:, :, None], 3, axis=-1)
        H, W, _ = img_3c.shape
        img_1024 = transform.resize(img_3c, (1024, 1024), order=3, preserve_range=True,
                                    anti_aliasing=True).astype(np.uint8)
        img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), 1e-8, None)
        tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0)
        box_1024 = (box[None] + np.array([0, 0, 1, 1])) / np.array([W, H, W, H]) * 1024 - np.array([0, 0, 1, 1])
        with torch.no_grad():
            embedding = medsam_model.image_encoder(tensor)
            sparse, dense = medsam_model.prompt_encoder(
                points=None, boxes=torch.as_tensor(box_1024, dtype=torch.float)[:, None, :], masks=None)
            logits, _ = medsam_model.mask_decoder(
                image_embeddings=embedding, image_pe=medsam_model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            prediction = F.interpolate(torch.sigmoid(logits), size=(H, W), mode="bilinear", align_corners=False)
        np.testing.assert_array_equal(mine, prediction.squeeze().numpy() > 0.5)


# -- the full-size SAM architectures, checked against the official checkpoints' facts -----------
OFFICIAL_SHAPES = {  # from the published checkpoints: embed dim, blocks, global attention blocks
    "sam_vit_b": (768, 12, (2, 5, 8, 11)),
    "sam_vit_l": (1024, 24, (5, 11, 17, 23)),
    "sam_vit_h": (1280, 32, (7, 15, 23, 31)),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_SHAPES))
def test_full_size_sam_architectures_fit_the_official_checkpoints(name):
    """Built on the meta device (no memory, no time): the parameter count matches the official
    file's size (fp32, under 0.2 % of pickle overhead) and the key shapes match ViT-B/L/H."""
    from nnunet_fmabs.generalists import generalist_class

    with torch.device("meta"):
        model = generalist_class(name).build()
    state = model.state_dict()
    count = sum(t.numel() for t in state.values())
    assert abs(4 * count - WEIGHTS[name].size) / WEIGHTS[name].size < 0.002
    dim, blocks, global_blocks = OFFICIAL_SHAPES[name]
    head = dim // (16 if dim > 768 else 12)
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, dim)
    assert sum(k.endswith("attn.qkv.weight") for k in state) == blocks
    for block in range(blocks):
        side = 2 * 64 - 1 if block in global_blocks else 2 * 14 - 1
        assert state[f"image_encoder.blocks.{block}.attn.rel_pos_h"].shape == (side, head)
    assert state["mask_decoder.iou_token.weight"].shape == (1, 256)
