"""CPU settings around the encoder: glibc keeps freed memory; numpy's BLAS stays on one thread."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nnunet_fmabs.generalists import cpu

FAULTS = textwrap.dedent("""
    import resource, torch
    from nnunet_fmabs.generalists.cpu import heap_kept

    def faults(kept):
        with heap_kept(kept):
            for _ in range(3):  # warm-up: the heap grows to fit (64 MB: above any mmap threshold)
                torch.empty(16 * 2**20).fill_(1.0)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(5):
                torch.empty(16 * 2**20).fill_(1.0)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    print(faults(False), faults(True))
""")


@pytest.mark.skipif(not cpu.glibc_available(), reason="mallopt parameters are glibc's")
def test_heap_kept_stops_refaulting_large_activations():
    """A fresh process (glibc's state is process-wide): 64 MB tensors fault on every allocation
    with glibc's defaults, not once the heap keeps them."""
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout
    outside, inside = map(int, out.split())
    assert outside >= 5 * 16  # five tensors, mapped and faulted in afresh (16 huge pages at least)
    assert inside <= outside // 2  # at most a re-grown heap now and then


def test_heap_kept_nests():
    with cpu.heap_kept():
        with cpu.heap_kept():
            assert cpu._depth == (2 if cpu.glibc_available() else 0)
        assert cpu._depth == (1 if cpu.glibc_available() else 0)
    assert cpu._depth == 0
    with cpu.heap_kept(enabled=False):
        assert cpu._depth == 0


def test_single_threaded_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with cpu.single_threaded_blas():
        blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_bf16_resolves_by_what_the_cpu_has(monkeypatch):
    """'auto' keeps the measured bf16 only on a CPU with native bf16 (emulated bf16 ran LiteMedSAM's encoder
    11x slower than fp32 on an AVX2 core); an explicit bf16 there is honoured with a warning."""
    import warnings

    import torch

    from nnunet_fmabs.generalists import base

    cpu, measured = torch.device("cpu"), {"cpu": torch.bfloat16}
    monkeypatch.setattr(base, "cpu_supports_bf16", lambda: False)
    assert base.resolve_dtype("auto", cpu, measured) == torch.float32
    with pytest.warns(RuntimeWarning, match="emulated"):
        assert base.resolve_dtype("bf16", cpu, measured) == torch.bfloat16
    monkeypatch.setattr(base, "cpu_supports_bf16", lambda: True)
    assert base.resolve_dtype("auto", cpu, measured) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert base.resolve_dtype("bf16", cpu, measured) == torch.bfloat16
        assert base.resolve_dtype("fp32", cpu, measured) == torch.float32
