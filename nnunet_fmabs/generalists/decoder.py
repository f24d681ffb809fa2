"""SAM's mask decoder run on a batch of slices, one prompt set per slice.

``segment_anything``'s ``MaskDecoder.predict_masks`` repeats every image embedding for every
prompt (B images x B prompts would decode B^2 pairs). Here slice i meets prompt set i only; the
arithmetic is otherwise the decoder's own, module by module.
"""
from __future__ import annotations

import torch
from torch import nn


def decode_masks(mask_decoder: nn.Module, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                 sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution logits (B, 1, 256, 256) and predicted IoU (B,) of the single-mask output.

    ``image_embeddings`` (B, C, h, w), ``image_pe`` (1, C, h, w), ``sparse`` (B, T, C) and
    ``dense`` (B, C, h, w) from the prompt encoder; ``multimask_output=False`` (mask token 0),
    as SamPredictor does for a box prompt.
    """
    decoder = mask_decoder
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    src = image_embeddings + dense
    pos_src = image_pe.expand(tokens.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1:(1 + decoder.num_mask_tokens), :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).view(b, c, h, w))
    hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                           dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    return masks[:, 0:1], iou_pred[:, 0]
