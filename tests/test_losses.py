import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_fmabs.losses import (
    consistency_loss,
    ema_update,
    noise_tolerant_dice,
    partial_cross_entropy,
    perturb,
)


# ---------------------------------------------------------------- noise-tolerant Dice (eq. 2)
def _tiny_probs_and_target():
    # B = 1, C = 2, two voxels. Foreground prob P1 = [0.8, 0.4]; truth Y1 = [1, 0].
    probs = torch.tensor([[[0.2, 0.6], [0.8, 0.4]]])
    target = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    return probs, target


def test_noise_tolerant_dice_hand_computed():
    probs, target = _tiny_probs_and_target()
    # class 1: |P - Y| = [0.2, 0.4]; 0.2^1.5 = 0.08944272, 0.4^1.5 = 0.25298221 -> 0.34242493
    #          sum P^2 = 0.64 + 0.16 = 0.8, sum Y^2 = 1 -> 0.34242493 / 1.80001 = 0.19023557
    # class 0: |P - Y| = [0.2, 0.4] -> same numerator 0.34242493
    #          sum P^2 = 0.04 + 0.36 = 0.4, sum Y^2 = 1 -> 0.34242493 / 1.40001 = 0.24458749
    # mean over classes: (0.19023557 + 0.24458749) / 2 = 0.21741153
    loss = noise_tolerant_dice(probs, target)
    assert loss.item() == pytest.approx(0.21741153, abs=1e-6)


def test_noise_tolerant_dice_sums_over_the_batch():
    probs, target = _tiny_probs_and_target()
    # the same two voxels split into two batch items: sums over the whole batch are unchanged
    probs_b = probs.permute(2, 1, 0)  # (2, 2, 1)
    target_b = target.permute(2, 1, 0)
    assert noise_tolerant_dice(probs_b, target_b).item() == pytest.approx(0.21741153, abs=1e-6)


def test_noise_tolerant_dice_gamma_2_is_plain_dice_loss():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 5, 4, 3, generator=g), dim=1)
    labels = torch.randint(0, 3, (2, 5, 4, 3), generator=g)
    onehot = F.one_hot(labels, 3).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    dice = 2 * (probs * onehot).sum(dims) / ((probs**2).sum(dims) + (onehot**2).sum(dims))
    plain = (1 - dice).mean()
    loss = noise_tolerant_dice(probs, onehot, gamma=2.0)
    assert loss.item() == pytest.approx(plain.item(), abs=1e-5)
    assert noise_tolerant_dice(probs, onehot, gamma=2.0, eps=0.0).item() == pytest.approx(
        plain.item(), abs=1e-6
    )


def test_noise_tolerant_dice_gradient_flows_and_is_finite_at_a_perfect_match():
    logits = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    target = F.one_hot(torch.randint(0, 2, (1, 4, 4, 4)), 2).permute(0, 4, 1, 2, 3).float()
    noise_tolerant_dice(torch.softmax(logits, 1), target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    perfect = target.clone().requires_grad_(True)
    loss = noise_tolerant_dice(perfect, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(perfect.grad).all()


def test_noise_tolerant_dice_mask_excludes_voxels():
    probs, target = _tiny_probs_and_target()
    # append a third voxel (masked out) with a gross error
    probs3 = torch.cat([probs, torch.tensor([[[1.0], [0.0]]])], dim=2)
    target3 = torch.cat([target, torch.tensor([[[0.0], [1.0]]])], dim=2)
    mask = torch.tensor([[[True, True, False]]])
    masked = noise_tolerant_dice(probs3, target3, mask=mask)
    assert masked.item() == pytest.approx(0.21741153, abs=1e-6)
    assert noise_tolerant_dice(probs3, target3).item() > 0.3
    with pytest.raises(ValueError, match="mask"):
        noise_tolerant_dice(probs3, target3, mask=mask[:, :, :2])


def test_noise_tolerant_dice_shape_mismatch():
    with pytest.raises(ValueError):
        noise_tolerant_dice(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))


# ---------------------------------------------------------------- partial CE (eq. 1)
@pytest.mark.parametrize("channel_dim", [True, False])
def test_partial_cross_entropy_equals_ce_on_labeled_voxels(channel_dim):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g)
    target = torch.randint(0, 3, (2, 4, 5, 6), generator=g)
    ignore = 3
    target[0, 1] = ignore  # a whole plane unlabeled
    target[1, :, 2] = -1  # padding
    labeled = (target != ignore) & (target >= 0)
    flat_logits = logits.permute(0, 2, 3, 4, 1)[labeled]  # (N, C)
    expected = F.cross_entropy(flat_logits, target[labeled])
    given = target[:, None] if channel_dim else target
    loss = partial_cross_entropy(logits, given, ignore)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # nnU-Net passes float targets
    assert partial_cross_entropy(logits, given.float(), ignore).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_partial_cross_entropy_all_ignored_is_zero_with_grad():
    logits = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    target = torch.full((1, 1, 3, 3, 3), 2)
    target[0, 0, 0, 0, 0] = -1
    loss = partial_cross_entropy(logits, target, ignore_index=2)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_partial_cross_entropy_shape_mismatch():
    with pytest.raises(ValueError):
        partial_cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 4), 2)


# ---------------------------------------------------------------- consistency L_c
STUDENT = torch.tensor([[[0.7, 0.4], [0.3, 0.6]]])  # (B=1, C=2, 2 voxels)
TEACHER_1 = torch.tensor([[[0.6, 0.4], [0.4, 0.6]]])  # |diff| = [0.1, 0, 0.1, 0] -> MAE 0.05
TEACHER_2 = torch.tensor([[[0.9, 0.2], [0.1, 0.8]]])  # |diff| = [0.2, 0.2, 0.2, 0.2] -> MAE 0.2


def test_consistency_loss_hand_computed():
    # L_c = (0.05 + 0.2) / 2
    assert consistency_loss(STUDENT, [TEACHER_1, TEACHER_2]).item() == pytest.approx(0.125)
    assert consistency_loss(STUDENT, [TEACHER_1]).item() == pytest.approx(0.05)


def test_consistency_loss_mask():
    # voxel 0 only: MAE 0.1 and 0.2 -> 0.15; voxel 1 only: 0 and 0.2 -> 0.1
    first = torch.tensor([[[True, False]]])
    teachers = [TEACHER_1, TEACHER_2]
    assert consistency_loss(STUDENT, teachers, mask=first).item() == pytest.approx(0.15)
    assert consistency_loss(STUDENT, teachers, mask=~first).item() == pytest.approx(0.1)


def test_consistency_loss_teacher_gets_no_gradient():
    torch.manual_seed(0)
    student, teacher = nn.Conv3d(1, 2, 1), nn.Conv3d(1, 2, 1)
    x = torch.randn(2, 1, 3, 3, 3)
    teacher_probs = [torch.softmax(teacher(perturb(x)), 1) for _ in range(2)]
    consistency_loss(torch.softmax(student(x), 1), teacher_probs).backward()
    assert teacher.weight.grad is None and teacher.bias.grad is None
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0


def test_consistency_loss_errors():
    with pytest.raises(ValueError):
        consistency_loss(STUDENT, [])
    with pytest.raises(TypeError):
        consistency_loss(STUDENT, TEACHER_1)
    with pytest.raises(ValueError):
        consistency_loss(STUDENT, [TEACHER_1[:, :, :1]])


# ---------------------------------------------------------------- perturbations xi_j
def test_perturb_is_reproducible_and_keeps_shape():
    x = torch.randn(2, 1, 4, 4, 4)
    a = perturb(x, torch.Generator().manual_seed(3))
    b = perturb(x, torch.Generator().manual_seed(3))
    c = perturb(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_perturb_contrast_keeps_mean_and_scales_deviations():
    x = torch.randn(3, 2, 6, 6, 6) + 2.0
    y = perturb(x, torch.Generator().manual_seed(0), noise_std=0.0)
    mean_x = x.mean(dim=(2, 3, 4), keepdim=True)
    assert torch.allclose(y.mean(dim=(2, 3, 4), keepdim=True), mean_x, atol=1e-5)
    factor = (y - mean_x) / (x - mean_x)
    per_sample = factor.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-4)
    assert ((per_sample[:, 0] >= 0.75) & (per_sample[:, 0] <= 1.25)).all()
    fixed = perturb(x, noise_std=0.0, contrast_range=(0.5, 0.5))
    assert torch.allclose(fixed, mean_x + 0.5 * (x - mean_x), atol=1e-6)


def test_perturb_noise_std():
    x = torch.zeros(2, 1, 32, 32, 32)
    y = perturb(x, torch.Generator().manual_seed(0), noise_std=0.1, contrast_range=(1.0, 1.0))
    assert y.std().item() == pytest.approx(0.1, rel=0.02)
    with pytest.raises(ValueError):
        perturb(x, contrast_range=(1.2, 0.8))


# ---------------------------------------------------------------- mean teacher
def test_ema_update_hand_computed_step():
    teacher, student = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1)), nn.Sequential(
        nn.Linear(1, 1), nn.BatchNorm1d(1)
    )
    with torch.no_grad():
        teacher[0].weight.fill_(1.0), teacher[0].bias.fill_(0.0)
        student[0].weight.fill_(3.0), student[0].bias.fill_(1.0)
        student[1].running_mean.fill_(0.7)
        student[1].num_batches_tracked.fill_(5)
    ema_update(teacher, student, alpha=0.99)
    # 0.99 * 1 + 0.01 * 3 = 1.02; 0.99 * 0 + 0.01 * 1 = 0.01
    assert teacher[0].weight.item() == pytest.approx(1.02)
    assert teacher[0].bias.item() == pytest.approx(0.01)
    assert teacher[1].running_mean.item() == pytest.approx(0.7)  # buffers copied
    assert teacher[1].num_batches_tracked.item() == 5
    assert student[0].weight.item() == 3.0  # student untouched
    ema_update(teacher, student, alpha=0.5)  # 0.5 * 1.02 + 0.5 * 3 = 2.01
    assert teacher[0].weight.item() == pytest.approx(2.01)


def test_ema_update_inside_a_grad_graph_and_errors():
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    ema_update(teacher, student)  # parameters require grad: must not raise
    assert teacher.weight.grad_fn is None
    with pytest.raises(ValueError):
        ema_update(teacher, nn.Linear(2, 1, bias=False))
    with pytest.raises(ValueError):
        ema_update(teacher, student, alpha=1.5)
