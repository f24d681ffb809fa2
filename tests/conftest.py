"""Shared fixtures: one tiny phantom dataset, planned and preprocessed by nnU-Net's own CLI.

Runs through the stock commands (subprocesses) use ``run_cli``; each test uses its own results
folder so that runs never see each other.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nnunet_fmabs.workspace import NnUNetWorkspace, run_command

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 991
DATASET = "Dataset991_FMABSPhantom"

# tiny, quick schedules for every run through the stock CLI
TINY = {
    "FMABS_EPOCHS": "2",
    "FMABS_ITERATIONS_PER_EPOCH": "3",
    "FMABS_VAL_ITERATIONS": "1",
    "FMABS_TTA": "0",
    "FMABS_BUDGET": "3",
    "FMABS_K": "1",
    "nnUNet_n_proc_DA": "0",
    "nnUNet_def_n_proc": "1",
    "nnUNet_compile": "0",
    "OMP_NUM_THREADS": "2",
}


# the `slow` marker: trainings through nnU-Net's stock CLI and runs of the real generalist weights;
# `pytest -m "not slow"` runs the rest (the unit tests) in about a minute
SLOW_FIXTURES = {"nnunet_run"}
SLOW_MODULES = {"test_demo.py", "test_generalist_litemedsam.py", "test_label_volume.py", "test_benchmarks.py",
                "test_fmabs_cli.py", "test_barely_labeled_dataset.py", "test_stock_cli.py", "test_loss_acts.py",
                "test_distributed.py"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a training through nnU-Net's CLI, a run of real generalist weights "
                                       "or of several processes")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def run_cli(args: list[str], env: dict, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """A command (nnU-Net's or ours) in ``env``; a failure raises with the end of its output."""
    return run_command(args, env, timeout=timeout, check=check)


@pytest.fixture(scope="session")
def phantom_nnunet(tmp_path_factory) -> dict:
    """nnU-Net raw + preprocessed phantom (6 training scans, 2 test scans, 32^3 voxels)."""
    root = tmp_path_factory.mktemp("nnunet")
    workspace = NnUNetWorkspace(root, folder_names=("raw", "preprocessed", "results")).create()
    workspace.make_phantom(DATASET_ID, n_train=6, n_test=2, shape=(32, 32, 32), seed=3)
    workspace.plan(DATASET_ID, **TINY)
    return {"root": root, "env": workspace.env(**TINY), "dataset": DATASET, "id": str(DATASET_ID),
            "workspace": workspace}


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory) -> Path:
    """A folder with a dummy distribution declaring the test generalist ``box_threshold``."""
    from nnunet_fmabs.generalists.registry import declare_plugins

    return declare_plugins(tmp_path_factory.mktemp("plugins"), "fmabs-test-plugins", {
        "box_threshold": "tests.plugins.box_generalist:BoxThresholdGeneralist",
        "fails_after_first_round": "tests.plugins.box_generalist:FailsAfterFirstRoundGeneralist"})


@pytest.fixture
def nnunet_run(phantom_nnunet, plugin_path, tmp_path) -> dict:
    """The shared preprocessed phantom, with a results folder of this test's own; the cheap test
    generalist ``box_threshold`` is importable by the subprocesses (entry point on PYTHONPATH)."""
    env = dict(phantom_nnunet["env"])
    env["nnUNet_results"] = str(tmp_path / "results")
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), str(REPO)])
    env["FMABS_GENERALIST"] = "box_threshold"
    return {**phantom_nnunet, "env": env, "results": tmp_path / "results", "tmp": tmp_path}


def fold_dir(run: dict, trainer: str, fold: int = 0) -> Path:
    return Path(run["env"]["nnUNet_results"]) / run["dataset"] / f"{trainer}__nnUNetPlans__3d_fullres" / f"fold_{fold}"


@pytest.fixture
def trainer_inputs(phantom_nnunet, monkeypatch, tmp_path) -> tuple[dict, dict]:
    """(plans, dataset_json) of the shared phantom, for building a trainer in this process; nnU-Net's
    variables point at the phantom and at a results folder of this test's own."""
    import json

    monkeypatch.setenv("nnUNet_preprocessed", phantom_nnunet["env"]["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    folder = Path(phantom_nnunet["env"]["nnUNet_preprocessed"]) / DATASET
    return (json.loads((folder / "nnUNetPlans.json").read_text()),
            json.loads((folder / "dataset.json").read_text()))
