"""Issue 8: the bad-input catalogue (README, "When something is wrong"), one test per row that is
not already tested beside its module (see the README table for where each row is tested)."""
from __future__ import annotations

import errno
import json
import re
import shutil

import numpy as np
import pytest
import torch

from nnunet_fmabs.validation import DatasetError, check_labels
from tests.conftest import DATASET, fold_dir
from tests.trainers.test_fmabs_cli import train


def test_dataset_without_labels():
    with pytest.raises(DatasetError, match="dataset.json of X: .*no foreground label"):
        check_labels({"background": 0}, "dataset.json of X", binary=False)
    with pytest.raises(DatasetError, match="no 'labels' declared"):
        check_labels({}, "dataset.json of X", binary=False)


def test_ignore_label_declared_wrongly():
    with pytest.raises(DatasetError, match="ignore label is 1.*highest value.*Renumber it to 3"):
        check_labels({"background": 0, "ignore": 1, "organ": 2}, "dataset.json of X", binary=False)


def test_multi_class_dataset_to_the_binary_fmabs_trainer(trainer_inputs):
    from nnunet_fmabs.trainers import FMABSTrainer_HER_MV, SupCrossTrainer

    plans, dataset_json = trainer_inputs
    dataset_json["labels"] = {"background": 0, "atrium": 1, "ventricle": 2}
    message = (f"dataset.json of {DATASET}: FM-ABS pseudo labels are binary (one organ, as in the paper), but the "
               "dataset has 2 foreground labels ['atrium', 'ventricle']. Use SupCrossTrainer or MeanTeacherTrainer, "
               "or make one binary dataset per structure.")
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        FMABSTrainer_HER_MV({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json,
                            device=torch.device("cpu"))
    # the cross-label baseline is multi-class
    SupCrossTrainer({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))


def test_teacher_mask_empty_everywhere_still_completes():
    from nnunet_fmabs.pseudolabels.labeler import label_volume

    class Counting:
        calls = 0

        def segment(self, slices, boxes, points=None):
            Counting.calls += len(slices)
            return [np.ones(s.shape, bool) for s in slices]

    image = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)
    out = label_volume(image, np.zeros(image.shape, bool), Counting(), np.random.default_rng(0))
    assert Counting.calls == 0 and out.n_prompted_slices == 0
    assert out.fused.shape == image.shape and not out.fused.any()


def test_disk_full_while_writing_pseudo_labels_keeps_the_old_state(tmp_path, monkeypatch):
    from nnunet_fmabs.pseudolabels.store import PseudoLabelStore

    store = PseudoLabelStore(tmp_path)
    index, partial = store.begin_round("teacher-a")
    store.save_case(partial, "a", np.ones((4, 4, 4), np.uint8))
    store.commit_round(index, partial, iteration=10, reason="schedule", stats={})
    state = (tmp_path / "state.json").read_bytes()
    index, partial = store.begin_round("teacher-b")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.save_case(partial, "a", np.zeros((4, 4, 4), np.uint8))
    assert (tmp_path / "state.json").read_bytes() == state
    assert not list(tmp_path.rglob(".tmp-*")) and not (partial / "a.npz").exists()
    assert PseudoLabelStore(tmp_path).latest_dir == tmp_path / "round_00"
    with np.load(tmp_path / "round_00" / "a.npz") as z:
        assert z["y"].all()


def test_a_writer_killed_mid_write_leaves_no_temporary_file_in_the_committed_round(tmp_path):
    """A SIGKILL inside atomic_path leaves its ``.tmp-*`` file (no ``finally`` runs): the resumed round drops it
    (the owner only: under DDP the other ranks may be writing theirs), keeps the scans already saved."""
    from nnunet_fmabs.pseudolabels.store import PseudoLabelStore

    store = PseudoLabelStore(tmp_path)
    index, partial = store.begin_round("teacher-a")
    store.save_case(partial, "scan_0", np.ones((4, 4, 4), np.uint8))
    (partial / ".tmp-q0qg55wo-scan_7.npz").write_bytes(b"half a file")  # the kill's leftover
    assert store.begin_round("teacher-a", owner=False) == (index, partial)
    assert (partial / ".tmp-q0qg55wo-scan_7.npz").exists()  # another rank's write may be in flight
    assert store.begin_round("teacher-a") == (index, partial)  # the resumed run's owner
    assert sorted(p.name for p in partial.iterdir()) == ["scan_0.npz", "teacher.txt"]
    final = store.commit_round(index, partial, iteration=10, reason="schedule", stats={})
    assert sorted(p.name for p in final.iterdir()) == ["scan_0.npz", "teacher.txt"]


def test_generalist_that_raises_mid_training_keeps_the_old_pseudo_labels(nnunet_run):
    trainer = "FMABSTrainer_RAND_MV"
    folder = fold_dir(nnunet_run, trainer)
    env = {"FMABS_EPOCHS": "3", "FMABS_ITERATIONS_PER_EPOCH": "2", "FMABS_BUDGET": "1",
           "FMABS_PL_ROUNDS": "0.3,0.6", "FMABS_GENERALIST": "fails_after_first_round",
           "FMABS_TEST_FAIL_IF_EXISTS": str(folder / "fmabs" / "pseudolabels" / "round_00")}
    train(nnunet_run, trainer, env=env)
    assert (folder / "checkpoint_final.pth").is_file()
    state = json.loads((folder / "fmabs" / "pseudolabels" / "state.json").read_text())
    assert [r["dir"] for r in state["rounds"]] == ["round_00"]
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "FAILED (RuntimeError: simulated generalist failure" in log
    assert "round_00" in log.split("FAILED")[1]


def test_run_folder_of_another_trainer_passed_to_resume(nnunet_run):
    train(nnunet_run, "SupCrossTrainer", env={"FMABS_EPOCHS": "1", "FMABS_ITERATIONS_PER_EPOCH": "1"})
    other = fold_dir(nnunet_run, "FMABSTrainer_RAND_MV")
    other.parent.mkdir(parents=True)
    shutil.copytree(fold_dir(nnunet_run, "SupCrossTrainer"), other)
    proc = train(nnunet_run, "FMABSTrainer_RAND_MV", "--c", check=False,
                 env={"FMABS_EPOCHS": "1", "FMABS_ITERATIONS_PER_EPOCH": "1"})
    assert proc.returncode != 0
    assert "written by trainer SupCrossTrainer, not FMABSTrainer_RAND_MV" in proc.stdout + proc.stderr
