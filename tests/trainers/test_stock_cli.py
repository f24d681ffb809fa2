"""Issue 2: the stock nnU-Net commands find and run our trainers after `pip install`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import fold_dir, run_cli


def test_sup_dense_train_resume_predict_evaluate(nnunet_run):
    env, ds = nnunet_run["env"], nnunet_run["id"]
    run_cli(["nnUNetv2_train", ds, "3d_fullres", "0", "-tr", "SupDenseTrainer", "-device", "cpu"], env)
    folder = fold_dir(nnunet_run, "SupDenseTrainer")
    assert (folder / "checkpoint_final.pth").is_file()
    # --c on a finished run: nnU-Net loads the final checkpoint through our class and stops
    proc = run_cli(["nnUNetv2_train", ds, "3d_fullres", "0", "-tr", "SupDenseTrainer", "-device", "cpu", "--c"], env)
    assert "Using trainer 'SupDenseTrainer'" in proc.stdout
    raw = nnunet_run["root"] / "raw" / nnunet_run["dataset"]
    out = nnunet_run["tmp"] / "pred"
    run_cli(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", ds, "-c", "3d_fullres",
             "-f", "0", "-tr", "SupDenseTrainer", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)
    assert len(list(out.glob("*.nii.gz"))) == 2
    run_cli(["nnunet-fmabs", "evaluate", str(out), str(raw / "labelsTs"), "-o", str(out / "m.json")], env)
    metrics = json.loads((out / "m.json").read_text())
    assert "mean" in json.dumps(metrics)


def test_user_ext_trainer_value_survives(tmp_path):
    user_dir = tmp_path / "my_trainers"
    user_dir.mkdir()
    env = {**os.environ, "nnUNet_extTrainer": str(user_dir)}
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['nnUNet_extTrainer'])"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    parts = out.split(os.pathsep)
    assert parts[0] == str(user_dir)
    assert parts[-1].endswith(os.path.join("nnunet_fmabs", "_nnunet_ext"))
    # and nnU-Net's own lookup, in a fresh process, still finds our classes through it
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
            "c = f('FMABSTrainer_HER_MV'); print(c.__module__, c.__name__)")
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "nnunet_fmabs.trainers.variants FMABSTrainer_HER_MV" in found.stdout


def test_every_trainer_name_resolves_in_a_fresh_process():
    from nnunet_fmabs.trainers import TRAINER_NAMES

    code = ("import contextlib, io, sys\n"
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
            "for n in sys.argv[1:]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        c = f(n)\n"
            "    print(n, c.__module__)\n")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    out = subprocess.run([sys.executable, "-c", code, *TRAINER_NAMES], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert [line.split()[0] for line in out] == TRAINER_NAMES
    assert all(line.split()[1].startswith("nnunet_fmabs.trainers") for line in out)
