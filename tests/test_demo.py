"""``nnunet-fmabs demo``: the smoke setting end to end through the stock nnU-Net commands (issue 7).

The smoke run is the CI miniature: tiny phantom, a few iterations, one pseudo-label round with the
demo's box-threshold stand-in generalist (the real LiteMedSAM runs in tests/generalists and in the
default demo). Its numbers mean nothing; the test checks the pipeline and the output contract that
outside checks read (``demo_results.json``).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_fmabs import demo

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
METHOD_KEYS = {"dice", "jaccard", "hd95", "asd", "labeled_slices"}


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMABS_")}
    # the demo must never use (nor need) the user's own nnU-Net folders
    env.update({"nnUNet_raw": str(tmp_path / "user_raw"), "nnUNet_preprocessed": str(tmp_path / "user_pre"),
                "nnUNet_results": str(tmp_path / "user_results"), "OMP_NUM_THREADS": "2",
                "nnUNet_def_n_proc": "1"})
    return env


def _demo(args: list[str], env: dict, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "nnunet-fmabs"), "demo", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("demo")
    env = _env(tmp)
    workdir = tmp / "smoke"
    proc = _demo(["--smoke", "--workdir", str(workdir), "--set", "FMABS_PL_GUARD_MARGIN=0.05"], env, tmp)
    return {"proc": proc, "workdir": workdir, "env": env, "tmp": tmp}


def test_smoke_demo_runs_and_writes_the_contract(smoke_run):
    proc, workdir = smoke_run["proc"], smoke_run["workdir"]
    assert proc.returncode == 0, f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    results = json.loads((workdir / demo.RESULTS_FILE).read_text())
    assert set(results) == {"methods", "wall_seconds", "settings"}
    assert set(results["methods"]) == {"FMABSTrainer_HER_MV", "SupCrossTrainer"}
    for name, m in results["methods"].items():
        assert set(m) == METHOD_KEYS, name
        assert 0.0 <= m["dice"] <= 1.0 and 0.0 <= m["jaccard"] <= 1.0, (name, m)
        assert m["hd95"] >= 0 and m["asd"] >= 0
        assert m["labeled_slices"] == 6  # the same budget for both: 2 scans x 3 slices
    assert results["wall_seconds"] > 0
    settings = results["settings"]
    assert settings["mode"] == "smoke"
    assert settings["set"] == {"FMABS_PL_GUARD_MARGIN": "0.05"} == {k: v for k, v in settings["fmabs_env"].items()
                                                                   if k == "FMABS_PL_GUARD_MARGIN"}
    assert "with FMABS_PL_GUARD_MARGIN=0.05" in proc.stdout
    # the stand-in generalist is said, in the JSON and on screen
    assert settings["generalist"] == demo.SMOKE_GENERALIST and "STAND-IN" in settings["note"]
    assert "STAND-IN" in proc.stdout
    # the table
    assert "Dice %" in proc.stdout and "Sup-cross" in proc.stdout and "FM-ABS" in proc.stdout
    assert "FMABSTrainer_HER_MV" in proc.stdout and "SupCrossTrainer" in proc.stdout
    assert "active_learning_curve.png" in proc.stdout


def test_smoke_demo_stays_inside_its_workdir(smoke_run):
    workdir, tmp = smoke_run["workdir"], smoke_run["tmp"]
    assert not any((tmp / d).exists() for d in ("user_raw", "user_pre", "user_results"))
    fold = workdir / "nnUNet_results" / demo.DATASET / "FMABSTrainer_HER_MV__nnUNetPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert list((fold / "fmabs" / "pseudolabels" / "round_00").glob("*.png"))
    assert (fold / "fmabs" / "loss_terms.png").is_file()
    assert (fold / "fmabs" / "active_learning_curve.png").is_file()
    for trainer in demo.METHODS:
        assert len(list((workdir / "predictions" / trainer).glob("*.nii.gz"))) == 2


def test_rerun_in_the_same_workdir_is_refused_and_changes_nothing(smoke_run):
    workdir = smoke_run["workdir"]
    before = (workdir / demo.RESULTS_FILE).read_bytes()
    proc = _demo(["--smoke", "--workdir", str(workdir)], smoke_run["env"], smoke_run["tmp"], timeout=120)
    assert proc.returncode != 0
    assert "not empty" in proc.stderr and "--workdir" in proc.stderr
    assert (workdir / demo.RESULTS_FILE).read_bytes() == before


def test_set_takes_run_settings_only():
    assert demo._settings_overrides(["FMABS_AL_SPREAD=0.25", "FMABS_K=3"]) == {"FMABS_AL_SPREAD": "0.25", "FMABS_K": "3"}
    with pytest.raises(ValueError, match=r"'FMABS_AL_SPRED=0.25': expected NAME=VALUE with NAME one of FMABS_AL_SPREAD"):
        demo._settings_overrides(["FMABS_AL_SPRED=0.25"])  # a typo is refused, not ignored
    for bad in ("FMABS_K", "FMABS_K=", "K=3"):
        with pytest.raises(ValueError, match="expected NAME=VALUE"):
            demo._settings_overrides([bad])
    with pytest.raises(ValueError, match="use --seed"):
        demo._settings_overrides(["FMABS_SEED=3"])


def test_smoke_and_full_exclude_each_other(tmp_path):
    proc = _demo(["--smoke", "--full", "--workdir", str(tmp_path / "x")], _env(tmp_path), tmp_path, timeout=120)
    assert proc.returncode != 0 and "exclude" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_subprocess_output_is_split_into_lines_and_progress_updates():
    stream = io.BufferedReader(io.BytesIO(b"epoch 1\n 10%|#  \r 50%|### \r100%|####\nlast"))
    assert list(demo._lines(stream)) == [("epoch 1", True), (" 10%|#  ", False), (" 50%|### ", False),
                                         ("100%|####", True), ("last", True)]
