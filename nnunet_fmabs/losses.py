"""Losses and mean-teacher pieces of FM-ABS (paper eqs. 1-3, section 2.2).

Tensors are channel-first, ``(B, C, *spatial)``. The functions are pure except ``ema_update``,
which updates the teacher in place.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nnunet_fmabs.schedules import gaussian_rampup, lambda_c, lambda_sam

NT_DICE_GAMMA = 1.5
"""gamma of the noise-tolerant Dice loss (eq. 2)."""

NT_DICE_EPS = 1e-5
"""epsilon of the noise-tolerant Dice loss (eq. 2)."""

EMA_ALPHA = 0.99
"""alpha of the mean-teacher update (section 2.2)."""

CONSISTENCY_NOISE_STD = 0.1
"""Standard deviation of the Gaussian noise in the perturbations xi_j (section 2.2)."""

CONSISTENCY_CONTRAST_RANGE = (0.75, 1.25)
"""Range of the random contrast factor in the perturbations xi_j (section 2.2)."""

CONSISTENCY_PERTURBATIONS = 2
"""J, the perturbed teacher passes of L_c (section 2.2)."""

UAMT_PASSES = 4
"""T, the stochastic teacher passes of UA-MT's uncertainty (Yu et al. 2019; a baseline of Table 1)."""


def _check_mask(mask: Tensor, reference: Tensor, what: str) -> Tensor:
    """A (B, 1, *spatial) voxel mask as a float tensor broadcastable over the classes."""
    expected = (reference.shape[0], 1, *reference.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"{what}: mask must have shape {expected}, got {tuple(mask.shape)}")
    return mask.to(dtype=reference.dtype)


def partial_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """L_sup^cross (eq. 1): cross-entropy averaged over the labeled voxels only.

    ``logits`` (B, C, *spatial); ``target`` (B, 1, *spatial) or (B, *spatial), integer class
    indices (float tensors holding integers, as nnU-Net's, are accepted). Voxels equal to
    ``ignore_index`` or negative (-1 = padding) are excluded. With no labeled voxel the result is
    0, still attached to the graph.
    """
    if target.ndim == logits.ndim:
        if target.shape[1] != 1:
            raise ValueError(f"target must have one channel, got shape {tuple(target.shape)}")
        target = target[:, 0]
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}"
        )
    target = target.long()
    labeled = (target != ignore_index) & (target >= 0)
    safe_target = torch.where(labeled, target, torch.zeros_like(target))
    per_voxel = F.cross_entropy(logits, safe_target, reduction="none")
    weights = labeled.to(per_voxel.dtype)
    # clamp avoids 0/0 without a host sync; with no labeled voxel the numerator is an exact 0
    return (per_voxel * weights).sum() / weights.sum().clamp_min(1.0)


def noise_tolerant_dice(
    probs: Tensor,
    target_onehot: Tensor,
    gamma: float = NT_DICE_GAMMA,
    eps: float = NT_DICE_EPS,
    mask: Tensor | None = None,
) -> Tensor:
    """L_sup^SAM (eq. 2), the noise-tolerant Dice loss of Wang et al. [18].

    Per class c: sum_v |P_v - Y_v|^gamma / (sum_v P_v^2 + sum_v Y_v^2 + eps), sums over every voxel
    of the batch; the result is the mean over the classes. ``probs`` and ``target_onehot`` are
    (B, C, *spatial); ``mask`` (B, 1, *spatial) selects the voxels that count (e.g. inside the
    image, not padding). With gamma = 2 it equals the soft Dice loss
    1 - 2 sum PY / (sum P^2 + sum Y^2) up to eps.
    """
    if probs.shape != target_onehot.shape:
        raise ValueError(
            f"probs {tuple(probs.shape)} and target_onehot {tuple(target_onehot.shape)} differ"
        )
    if probs.ndim < 3:
        raise ValueError(f"expected (B, C, *spatial) tensors, got shape {tuple(probs.shape)}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    target = target_onehot.to(dtype=probs.dtype)
    numerator_terms = (probs - target).abs().pow(gamma)
    p_sq = probs * probs
    y_sq = target * target
    if mask is not None:
        weights = _check_mask(mask, probs, "noise_tolerant_dice")
        numerator_terms = numerator_terms * weights
        p_sq = p_sq * weights
        y_sq = y_sq * weights
    dims = [0, *range(2, probs.ndim)]
    numerator = numerator_terms.sum(dim=dims)
    denominator = p_sq.sum(dim=dims) + y_sq.sum(dim=dims) + eps
    return (numerator / denominator).mean()


def consistency_loss(
    student_probs: Tensor, teacher_probs_list: Sequence[Tensor], mask: Tensor | None = None
) -> Tensor:
    """L_c = 1/J sum_j MAE(softmax f_teacher(X + xi_j), softmax f_student(X)) (section 2.2).

    Inputs are probabilities (already softmaxed), (B, C, *spatial) each; the teacher side is
    detached. The MAE is the mean absolute difference over all elements, or over the voxels of
    ``mask`` (B, 1, *spatial) and all classes when given (0, attached to the graph, if the mask
    is empty).
    """
    if isinstance(teacher_probs_list, Tensor):
        raise TypeError("teacher_probs_list must be a sequence of tensors, one per perturbation")
    if len(teacher_probs_list) == 0:
        raise ValueError("teacher_probs_list is empty: need at least one perturbation (J >= 1)")
    weights = None if mask is None else _check_mask(mask, student_probs, "consistency_loss")
    total = student_probs.new_zeros(())
    for j, teacher_probs in enumerate(teacher_probs_list):
        if teacher_probs.shape != student_probs.shape:
            raise ValueError(
                f"teacher probabilities {j} have shape {tuple(teacher_probs.shape)}, "
                f"student {tuple(student_probs.shape)}"
            )
        abs_diff = (teacher_probs.detach() - student_probs).abs()
        if weights is None:
            total = total + abs_diff.mean()
        else:
            count = weights.sum() * student_probs.shape[1]
            total = total + (abs_diff * weights).sum() / count.clamp_min(1.0)
    return total / len(teacher_probs_list)


def perturb(
    x: Tensor,
    generator: torch.Generator | None = None,
    noise_std: float = CONSISTENCY_NOISE_STD,
    contrast_range: tuple[float, float] = CONSISTENCY_CONTRAST_RANGE,
) -> Tensor:
    """X + xi_j (section 2.2): a random contrast change plus Gaussian noise.

    Per sample, one contrast factor c ~ U(contrast_range) scales each channel's deviations from
    its mean (the mean is kept): x' = mean + c (x - mean); then N(0, noise_std^2) noise is added
    per voxel. ``x`` is (B, C, *spatial); random numbers come from ``generator`` when given
    (drawn on its device, then moved to ``x``'s).
    """
    if x.ndim < 3:
        raise ValueError(f"expected (B, C, *spatial) input, got shape {tuple(x.shape)}")
    low, high = contrast_range
    if not 0 <= low <= high:
        raise ValueError(f"contrast_range must satisfy 0 <= low <= high, got {contrast_range!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    draw_device = generator.device if generator is not None else x.device
    factor_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    factor = torch.rand(factor_shape, generator=generator, device=draw_device, dtype=x.dtype)
    factor = (low + (high - low) * factor).to(x.device)
    noise = torch.randn(x.shape, generator=generator, device=draw_device, dtype=x.dtype)
    noise = (noise * noise_std).to(x.device)
    mean = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    return mean + factor * (x - mean) + noise


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float = EMA_ALPHA) -> None:
    """Mean-teacher update (section 2.2): theta~_t = alpha theta~_{t-1} + (1 - alpha) theta_t.

    Applied to the parameters (matched by name); buffers (e.g. batch-norm statistics) are copied
    from the student.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        raise ValueError("teacher and student have different parameters")
    for name, t_param in teacher_params.items():
        t_param.mul_(alpha).add_(student_params[name].detach(), alpha=1.0 - alpha)
    teacher_buffers = dict(teacher.named_buffers())
    student_buffers = dict(student.named_buffers())
    if teacher_buffers.keys() != student_buffers.keys():
        raise ValueError("teacher and student have different buffers")
    for name, t_buffer in teacher_buffers.items():
        t_buffer.copy_(student_buffers[name])


def teacher_probabilities(teacher: nn.Module, data: Tensor, n: int, autocast=None) -> list[Tensor]:
    """softmax(teacher(X + xi_j)), j = 1..n, as ONE batched call on n perturbed copies of the batch
    (nnU-Net's instance norm keeps the samples independent); no gradients. ``autocast``: a context
    manager factory for the forward pass (mixed precision), or None."""
    with torch.no_grad(), (autocast or contextlib.nullcontext)():
        logits = teacher(perturb(data.repeat(n, *([1] * (data.ndim - 1)))))
    return list(torch.softmax(logits.float(), 1).chunk(n))


def uncertainty_aware_consistency(student_probs: Tensor, teacher_passes: Sequence[Tensor], t: int,
                                  t_max: int) -> Tensor:
    """UA-MT's L_c (Yu et al. 2019): the MAE to the mean of T noisy teacher passes, only where the entropy of
    that mean is below a threshold that ramps from 0.75 to 1 of log(C) (a Gaussian ramp-up over t_max)."""
    mean = torch.stack(list(teacher_passes)).mean(0)
    uncertainty = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
    threshold = (0.75 + 0.25 * gaussian_rampup(t, t_max)) * math.log(mean.shape[1])
    return consistency_loss(student_probs, [mean], mask=(uncertainty < threshold).float())


def fmabs_loss(logits: Tensor, target: Tensor, n_labeled: int, ignore_index: int, t: int, t_max: int, *,
               use_sam_loss: bool = True, consistency=None, gamma: float = NT_DICE_GAMMA,
               eps: float = NT_DICE_EPS, lambda_sam_schedule: str = "paper",
               sam_target_trusted: bool = True) -> tuple[Tensor, dict]:
    """L = L_sup^cross + lambda_sam(t) L_sup^SAM + lambda_c(t) L_c (eq. 1, eq. 3) and its terms.

    ``logits`` (B, C, *spatial) in fp32, the first ``n_labeled`` samples cross-labeled; ``target`` (B, 2,
    *spatial): channel 0 the cross labels (``ignore_index`` off the three planes), channel 1 Y_f
    (``ignore_index`` or < 0 where unknown). L_sup^SAM is skipped (weight 0) when no voxel has Y_f;
    ``consistency``: None (no L_c) or a function of the student's probabilities returning L_c;
    ``lambda_sam_schedule``: :func:`~nnunet_fmabs.schedules.lambda_sam`'s ``paper`` (eq. 3), ``constant`` or
    ``guarded`` (held while ``sam_target_trusted``).
    """
    probs = torch.softmax(logits, 1)
    loss_cross = partial_cross_entropy(logits[:n_labeled], target[:n_labeled, 0], ignore_index)
    loss = loss_cross
    terms = {"loss_cross": loss_cross.detach(), "lambda_sam": 0.0, "lambda_c": 0.0}
    if use_sam_loss:
        y_f = target[:, 1]
        valid = (y_f != ignore_index) & (y_f >= 0)
        if bool(valid.any()):
            onehot = torch.zeros_like(probs)
            onehot.scatter_(1, torch.where(valid, y_f, 0).long()[:, None], 1.0)
            w = lambda_sam(t, t_max, lambda_sam_schedule, sam_target_trusted)
            loss_sam = noise_tolerant_dice(probs, onehot, gamma=gamma, eps=eps, mask=valid[:, None].float())
            loss = loss + w * loss_sam
            terms.update(loss_sam=loss_sam.detach(), lambda_sam=w)
    if consistency is not None:
        w = lambda_c(t, t_max)
        loss_cons = consistency(probs)
        loss = loss + w * loss_cons
        terms.update(loss_cons=loss_cons.detach(), lambda_c=w)
    return loss, terms
