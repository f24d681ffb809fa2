"""The `nnunet-fmabs` command: every subcommand answers --help; weights and doctor run offline."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).parent / "nnunet-fmabs")


@pytest.mark.parametrize("sub", ["doctor", "make-phantom", "convert-la", "evaluate", "status", "weights", "demo"])
def test_every_subcommand_has_help(sub):
    out = subprocess.run([EXE, sub, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: nnunet-fmabs " + sub in out


def test_weights_lists_every_generalist_with_its_variable():
    out = subprocess.run([EXE, "weights"], capture_output=True, text=True, check=True).stdout
    for name, var in (("litemedsam", "FMABS_LITEMEDSAM_CHECKPOINT"), ("sam_vit_b", "FMABS_SAM_VIT_B_CHECKPOINT"),
                      ("mobilesam", "FMABS_MOBILESAM_CHECKPOINT"), ("medsam", "FMABS_MEDSAM_CHECKPOINT")):
        assert name in out and var in out
    assert "litemedsam" in out.split("present")[0]  # the bundled weights are found
    assert "licence: Apache-2.0" in out


def test_status_of_a_folder_without_a_run_is_a_clear_error(tmp_path):
    proc = subprocess.run([EXE, "status", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and str(tmp_path) in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_names_what_to_install_for_a_generalist_whose_code_is_missing(monkeypatch, capsys):
    import importlib.util

    from nnunet_fmabs.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == "sam2" else real(module, *a))
    main(["doctor"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
             if line.startswith("  ") and len(line.split()) > 1}
    assert 'code missing: pip install "nnunet-fmabs[sam2]"' in lines["sam2.1_hiera_tiny"]
    assert "medsam2" in lines and "code missing" not in lines["litemedsam"]
    assert "licence Apache-2.0 (SAM 2)" in lines["sam2_hiera_large"]
