"""FMABS_CPU_THREADS limits torch's threads on CPU (nnUNetv2_train -device cpu takes every core)."""
from types import SimpleNamespace

import pytest
import torch

from nnunet_fmabs.trainers.common import PaperScheduleMixin


def _limit(monkeypatch, value, device="cpu"):
    monkeypatch.setenv("FMABS_CPU_THREADS", value)
    PaperScheduleMixin._limit_cpu_threads(SimpleNamespace(device=torch.device(device)))


def test_threads_follow_the_variable_on_cpu(monkeypatch):
    before = torch.get_num_threads()
    try:
        _limit(monkeypatch, "1")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before)
        _limit(monkeypatch, "1", device="meta")  # not a CPU run: left alone
        assert torch.get_num_threads() == before
        _limit(monkeypatch, "")
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_value_is_refused_by_name(monkeypatch, value):
    with pytest.raises(ValueError, match="FMABS_CPU_THREADS"):
        _limit(monkeypatch, value)
