import math

import pytest

from nnunet_fmabs.schedules import (
    HER_BETA_END,
    HER_BETA_START,
    LAMBDA_C_MAX,
    LAMBDA_SAM_MAX,
    at_epoch_start,
    gaussian_rampup,
    her_threshold,
    lambda_c,
    lambda_sam,
)

T_MAX = 20_000
# exp(-5 (1 - t/t_max)^2) at t = 0, t_max/2, t_max: e^-5, e^-1.25, e^0
E5 = 0.006737947  # e^-5
E125 = 0.286504797  # e^-1.25


def test_constants():
    assert (LAMBDA_SAM_MAX, LAMBDA_C_MAX, HER_BETA_START, HER_BETA_END) == (0.5, 0.1, 0.5, 0.75)


def test_gaussian_rampup_values_and_clipping():
    assert gaussian_rampup(0, T_MAX) == pytest.approx(E5, abs=1e-9)
    assert gaussian_rampup(T_MAX / 2, T_MAX) == pytest.approx(E125, abs=1e-9)
    assert gaussian_rampup(T_MAX, T_MAX) == 1.0
    assert gaussian_rampup(-100, T_MAX) == gaussian_rampup(0, T_MAX)
    assert gaussian_rampup(3 * T_MAX, T_MAX) == 1.0


@pytest.mark.parametrize("t_max", [0, -1])
def test_gaussian_rampup_rejects_non_positive_t_max(t_max):
    with pytest.raises(ValueError, match="t_max"):
        gaussian_rampup(0, t_max)


def test_lambda_sam():
    # 0.5 (1 - e^-5) = 0.5 * 0.993262053 = 0.496631027
    assert lambda_sam(0, T_MAX) == pytest.approx(0.496631027, abs=1e-8)
    # 0.5 (1 - e^-1.25) = 0.5 * 0.713495203 = 0.356747602
    assert lambda_sam(T_MAX / 2, T_MAX) == pytest.approx(0.356747602, abs=1e-8)
    assert lambda_sam(T_MAX, T_MAX) == 0.0


def test_lambda_sam_constant_schedule_holds_the_start_weight():
    # FMABS_LAMBDA_SAM_SCHEDULE=constant: 0.5 at every t, where eq. 3 gives 0.4966, 0.3567 and 0
    for t in (0, T_MAX / 2, T_MAX):
        assert lambda_sam(t, T_MAX, "constant") == 0.5
    assert lambda_sam(T_MAX / 2, T_MAX, "paper") == lambda_sam(T_MAX / 2, T_MAX)
    with pytest.raises(ValueError, match="'decay': use one of paper, constant, guarded"):
        lambda_sam(0, T_MAX, "decay")
    with pytest.raises(ValueError, match="t_max"):
        lambda_sam(0, 0, "constant")


def test_lambda_sam_guarded_schedule_holds_only_a_trusted_target():
    # FMABS_LAMBDA_SAM_SCHEDULE=guarded: 0.5 while the target is trusted, eq. 3's 0.4966 / 0.3567 / 0 otherwise
    for t, paper in ((0, 0.496631027), (T_MAX / 2, 0.356747602), (T_MAX, 0.0)):
        assert lambda_sam(t, T_MAX, "guarded", target_trusted=True) == 0.5
        assert lambda_sam(t, T_MAX, "guarded", target_trusted=False) == pytest.approx(paper, abs=1e-8)
    # the other schedules ignore the verdict
    assert lambda_sam(T_MAX / 2, T_MAX, "paper", target_trusted=True) == pytest.approx(0.356747602, abs=1e-8)
    assert lambda_sam(T_MAX / 2, T_MAX, "constant", target_trusted=False) == 0.5


def test_lambda_c():
    assert lambda_c(0, T_MAX) == pytest.approx(0.0006737947, abs=1e-9)  # 0.1 e^-5
    assert lambda_c(T_MAX / 2, T_MAX) == pytest.approx(0.0286504797, abs=1e-9)  # 0.1 e^-1.25
    assert lambda_c(T_MAX, T_MAX) == pytest.approx(0.1)


def test_her_threshold():
    assert her_threshold(0, T_MAX) == pytest.approx(0.501684487, abs=1e-8)  # 0.5 + 0.25 e^-5
    assert her_threshold(T_MAX / 2, T_MAX) == pytest.approx(0.571626199, abs=1e-8)
    assert her_threshold(T_MAX, T_MAX) == pytest.approx(0.75)


def test_schedules_are_monotone():
    ts = range(0, T_MAX + 1, 1000)
    sam = [lambda_sam(t, T_MAX) for t in ts]
    con = [lambda_c(t, T_MAX) for t in ts]
    beta = [her_threshold(t, T_MAX) for t in ts]
    assert sam == sorted(sam, reverse=True)
    assert con == sorted(con) and beta == sorted(beta)
    assert all(math.isfinite(v) for v in sam + con + beta)


def test_events_run_at_the_first_epoch_start_at_or_after_their_iteration():
    # the GPU smoke run's schedule: 4 epochs x 25 iterations, pseudo-label rounds at 0.1..0.8 of t_max = 100
    starts = sorted({at_epoch_start(t, 25, 4) for t in range(10, 90, 10)})
    assert starts == [25, 50, 75]  # 10, 20 -> 25; 30..50 -> 50; 60, 70 and 80 -> 75 (the last start: not dropped)
    assert at_epoch_start(0, 25, 4) == 0 and at_epoch_start(250, 250, 80) == 250
    assert [at_epoch_start(t, 250, 80) for t in (2000, 4000, 16000)] == [2000, 4000, 16000]  # the paper's: exact
    assert at_epoch_start(10**6, 10, 3) == 20
