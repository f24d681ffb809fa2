"""The benchmarks' own code on tiny data: LA conversion and Table 1 (la_table1), plans, --dry-run,
and one pseudo-label round with the cheap test generalist (pseudolabel_round)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # trainer_overhead imports la_table1 as the scripts do
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def la():
    return _load("la_table1")


SHAPE = (24, 20, 12)  # (x, y, z), as the h5 files store them


def _write_case(root: Path, case: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[6:16, 5:13, 3:9] = 1
    image[label > 0] += 2.0
    folder = root / "2018LA_Seg_Training Set" / case
    folder.mkdir(parents=True)
    with h5py.File(folder / "mri_norm2.h5", "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)


@pytest.fixture
def la_root(tmp_path):
    """Three training cases and one test case in the UA-MT layout (space in the folder name)."""
    root = tmp_path / "LA data"
    for i, case in enumerate(("CASE_A", "CASE_B", "CASE_C", "TEST_D")):
        _write_case(root, case, i)
    (root / "train.list").write_text("CASE_A\nCASE_B\nCASE_C\n")
    test_root = tmp_path / "held out"
    test_root.mkdir()
    (test_root / "test.list").write_text("TEST_D\n")
    return root, test_root


def test_convert_at_the_protocol_spacing_and_case_subset(la, la_root, tmp_path):
    root, test_root = la_root
    cases = la.select_cases(root, 2, test_root)
    assert cases == ["CASE_A", "CASE_B", "TEST_D"]
    out = la.convert(root, tmp_path / "raw", la.PROTOCOLS["paper"], test_root=test_root, cases=cases,
                     progress=False)
    assert out.name == "Dataset992_LA"
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["CASE_A.nii.gz", "CASE_B.nii.gz"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["TEST_D_0000.nii.gz"]
    coarse = la.protocol_with(la.PROTOCOLS["paper"], spacing_mm=1.25)
    out = la.convert(root, tmp_path / "raw2", coarse, progress=False)
    import SimpleITK as sitk

    image = sitk.ReadImage(str(out / "imagesTr" / "CASE_C_0000.nii.gz"))
    assert image.GetSpacing() == (1.25, 1.25, 1.25) and image.GetSize() == (12, 10, 6)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    assert la.select_cases(root, None, None) is None


def _plans_at(spacing: float) -> dict:
    """The part of nnU-Net's plans that derive_plans reads."""
    return {"transpose_forward": [0, 1, 2], "configurations": {"3d_fullres": {
        "spacing": [spacing] * 3, "patch_size": [40, 64, 80], "batch_size": 2,
        "architecture": {"arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320]}}}}}


def test_cpu_native_protocol_keeps_raw_images_native_and_lets_nnunet_resample(la, la_root, tmp_path, monkeypatch):
    """cpu_native: convert_la writes 0.625-mm raw images, nnU-Net's planner gets the 1.5-mm target spacing, so
    FMABS_PROMPT_RESOLUTION=raw has native slices to prompt (issue 12, defect 6)."""
    protocol = la.PROTOCOLS["cpu_native"]
    assert protocol.spacing_mm == 1.5 and protocol.raw_spacing_mm is None and la.PROTOCOLS["cpu"].raw_spacing_mm == 1.5
    root, _ = la_root
    out = la.convert(root, tmp_path / "raw", protocol, progress=False)
    import SimpleITK as sitk

    assert sitk.ReadImage(str(out / "imagesTr" / "CASE_C_0000.nii.gz")).GetSpacing() == (0.625, 0.625, 0.625)
    commands = []

    def fake_run(cmd, env, log=print, capture=None):  # nnU-Net's planner, as far as this function reads it
        commands.append(cmd)
        folder = tmp_path / "pp" / "Dataset992_LA"
        (folder / "nnUNetPlans_3d_fullres").mkdir(parents=True)
        (folder / "nnUNetPlans.json").write_text(json.dumps(_plans_at(1.5)))
        (folder / "dataset.json").write_text(json.dumps({"numTraining": 0}))  # nnU-Net copies the raw one

    monkeypatch.setattr(la, "run", fake_run)
    derived = la.plan_and_preprocess(992, {}, tmp_path / "pp", protocol, "nnUNetPlans_fmabsCPU_NATIVE", log=lambda m: 0)
    assert commands[0][-4:] == ["-overwrite_target_spacing", "1.5", "1.5", "1.5"]
    assert derived["configurations"]["3d_fullres"]["patch_size"] == [32, 48, 48]
    text = "\n".join(protocol.describe())
    assert "resampled from 0.625 mm by nnU-Net's preprocessing; raw images native" in text


def test_cpu_protocol_states_what_changed(la):
    text = "\n".join(la.PROTOCOLS["cpu"].describe())
    for what in ("1.5 mm", "patch 48x48x32", "base features 16", "t_max = 400", "20 epochs x 20", "K = 5",
                 "0.5,0.75", "bf16", "budget 6 scans (18 slices)", "the first 32 of the 80 training scans (fold 0: "
                 "25 pool, 7 test)"):
        assert what in text, what
    overridden = la.protocol_with(la.PROTOCOLS["cpu"], epochs=2, iterations_per_epoch=3, k=None)
    assert overridden.t_max == 6 and overridden.k == 5
    assert "overridden on the command line: epochs=2, iterations_per_epoch=3" in "\n".join(overridden.describe())
    assert la.PROTOCOLS["paper"].t_max == 20_000 and la.PROTOCOLS["paper"].spacing_mm is None


def test_paper_numbers_match_the_paper_text(la):
    line = ("FM-ABS (MV) \\dagger\tHER\t20*/60\t60\t86.14 (3.80)\t75.85 (5.79)\t11.54 (5.14)\t3.03 (0.75)\n")
    parsed = la.parse_paper_table("Left Atrium (LA) [21]\n" + line + "Brain Tumor (BT)\n")
    assert parsed == {"FM-ABS (MV) HER": {"dice": (86.14, 3.80), "jaccard": (75.85, 5.79), "hd95": (11.54, 5.14),
                                          "asd": (3.03, 0.75)}}
    # the repo's copy of the paper's LA block (always here), and the paper itself where ../shared is checked out
    assert la.parse_paper_table(la.PAPER_TABLE_COPY.read_text()) == la.PAPER_LA
    if la.PAPER_TEXT.is_file():
        paper = la.PAPER_TEXT.read_text()
        block = paper[paper.find("Left Atrium (LA)"):paper.find("Brain Tumor")]
        assert block in la.PAPER_TABLE_COPY.read_text()
        assert la.parse_paper_table(paper) == la.PAPER_LA


def _summary(dice):
    return {"n_cases": 2, "dice": dice, "dice_std": 1.0, "jaccard": dice - 10, "jaccard_std": 2.0, "hd95": 9.0,
            "hd95_std": 3.0, "asd": 2.5, "asd_std": 0.5, "hd95_grid_vox": 3.75, "asd_grid_vox": 1.0,
            "hd95_mm": 5.6, "asd_mm": 1.6}


def test_aggregate_and_table_put_the_paper_beside_ours(la):
    runs = [{"method": "FMABSTrainer_HER_MV", "summary": _summary(80.0)},
            {"method": "FMABSTrainer_HER_MV", "summary": _summary(84.0)},
            {"method": "SupCrossTrainer", "summary": _summary(70.0)},
            {"method": "MeanTeacherTrainer", "error": "boom"}]
    agg = la.aggregate(runs)
    assert set(agg) == {"FMABSTrainer_HER_MV", "SupCrossTrainer"}
    assert agg["FMABSTrainer_HER_MV"]["dice"] == pytest.approx(82.0)
    assert agg["FMABSTrainer_HER_MV"]["dice_std_over_runs"] == pytest.approx(2.0)
    assert agg["FMABSTrainer_HER_MV"]["n_runs"] == 2
    table = la.format_table(agg, methods=["SupCrossTrainer", "MeanTeacherTrainer", "FMABSTrainer_HER_MV"],
                            header_lines=["# title"], budget=20, pool=64, test_desc="fold 0 validation")
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    header = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    assert header[6:8] == ["Dice % ours", "Dice % paper"] and header[-1] == "runs"
    her = [c.strip() for c in rows["FM-ABS (MV) HER"].split("|")[1:-1]]
    assert her[6:8] == ["82.00 (1.00)", "86.14 (3.80)"]  # ours, then the paper's, side by side
    assert her[4:6] == ["20*/44", "60"] and her[-1] == "2"
    cross = [c.strip() for c in rows["Sup (cross; baseline)"].split("|")[1:-1]]
    assert cross[4] == "20*/0" and cross[7] == "73.68 (10.81)"
    mt = [c.strip() for c in rows["MT"].split("|")[1:-1]]
    assert mt[6] == "not run" and mt[7] == "76.45 (10.99)"  # failed runs do not count
    dense = [c.strip() for c in rows["Sup (dense; upper bound)"].split("|")[1:-1]]
    assert dense[4] == "64/0" and dense[7] == "91.56 (2.06)"
    for ref in ("UA-MT", "FM-ABS (UA) random", "FM-ABS (MV) random"):  # the paper's reference rows stay
        assert ref in rows
    assert "Test set: fold 0 validation." in table


def test_run_summary_from_evaluate_folders(la, la_root, tmp_path):
    root, _ = la_root
    out = la.convert(root, tmp_path / "raw", la.PROTOCOLS["paper"], progress=False)
    gt = la.gt_subset(out / "labelsTr", ["CASE_A", "CASE_C"], tmp_path / "gt")
    assert sorted(p.name for p in gt.iterdir()) == ["CASE_A.nii.gz", "CASE_C.nii.gz"]
    with pytest.warns(UserWarning, match="no ground truth"):  # CASE_B is not in the subset
        results = la.evaluate(out / "labelsTr", gt, tmp_path / "m.json")  # predictions = ground truth
    s = la.run_summary(results)
    assert s["n_cases"] == 2 and s["dice"] == pytest.approx(100.0) and s["hd95"] == pytest.approx(0.0)
    assert (tmp_path / "m.json").is_file()


def test_derive_plans_recomputes_the_topology(la):
    plans = _plans_at(1.5)
    patch = la.patch_in_plans_axes((48, 48, 32), plans["transpose_forward"])
    assert patch == [32, 48, 48]  # NIfTI arrays are (z, y, x)
    assert la.patch_in_plans_axes((48, 40, 32), [2, 1, 0]) == [48, 40, 32]
    new = la.derive_plans(plans, patch_size=patch, batch_size=3, base_features=16, plans_name="P")
    conf = new["configurations"]["3d_fullres"]
    arch = conf["architecture"]["arch_kwargs"]
    assert conf["patch_size"] == [32, 48, 48] and conf["batch_size"] == 3 and new["plans_name"] == "P"
    assert arch["n_stages"] == len(arch["strides"]) == len(arch["kernel_sizes"]) == len(arch["features_per_stage"])
    assert arch["features_per_stage"][0] == 16 and max(arch["features_per_stage"]) <= 160
    total = np.prod(np.array(arch["strides"]), axis=0)
    assert all(p % s == 0 for p, s in zip(conf["patch_size"], total))
    assert plans["configurations"]["3d_fullres"]["batch_size"] == 2  # the source is not changed


def test_budget_seeds_and_environment(la, tmp_path):
    assert la.effective_budget(20, 64) == (20, None)
    budget, note = la.effective_budget(20, 9)
    assert budget == 2 and "25 %" in note
    assert la.run_seeds([0, 5], 1) == [("seed0", 0), ("seed5", 5)]
    assert la.run_seeds([0], 3) == [("seed0_rep0", 0), ("seed0_rep1", 1000), ("seed0_rep2", 2000)]
    env = la.trainer_env({"FMABS_K": "99", "PATH": "x"}, la.PROTOCOLS["cpu"], seed=7, budget=20,
                         results=tmp_path, device="cpu")
    assert env["FMABS_K"] == "5" and env["FMABS_SEED"] == "7" and env["FMABS_EPOCHS"] == "20"
    assert env["FMABS_GENERALIST_DTYPE"] == "auto" and env["nnUNet_n_proc_DA"] == "0" and env["PATH"] == "x"
    assert "FMABS_GENERALIST" not in la.run_stamp("MeanTeacherTrainer", env)  # no pseudo labels: not compared
    assert la.run_stamp("FMABSTrainer_HER_MV", env)["FMABS_GENERALIST"] == "litemedsam"
    assert "FMABS_EMBEDDING_CACHE" not in env  # each run its own cache unless the benchmark shares one
    shared = la.trainer_env({}, la.PROTOCOLS["cpu"], seed=7, budget=20, results=tmp_path, device="cpu",
                            embedding_cache=tmp_path / "cache")
    assert shared["FMABS_EMBEDDING_CACHE"] == str(tmp_path / "cache")
    assert la.run_stamp("FMABSTrainer_HER_MV", shared) == la.run_stamp("FMABSTrainer_HER_MV", env)  # where, not what
    cmd = la.predict_cmd(Path("i"), Path("o"), "SupCrossTrainer", "all", "P", "cuda")
    assert "--disable_tta" in cmd and cmd[cmd.index("-f") + 1] == "all" and "-npp" not in cmd


def test_an_unfinished_run_is_resumed_only_with_its_own_settings(la, tmp_path):
    """A session that stops mid-run leaves checkpoint_latest.pth: the next call resumes it (--c) instead of
    deleting an hour of training, unless the folder's stamp names other settings."""
    fold_dir = tmp_path / "fold_0"
    stamp = {"FMABS_SEED": "0", "FMABS_EPOCHS": "20"}
    assert la.unfinished_run_to_resume(fold_dir, stamp) is False  # nothing there
    fold_dir.mkdir()
    (fold_dir / "la_table1_run.json").write_text(json.dumps({"settings": stamp, "train_s": None}))
    assert la.unfinished_run_to_resume(fold_dir, stamp) is False  # started, killed before its first checkpoint
    (fold_dir / "checkpoint_latest.pth").write_bytes(b"")
    assert la.unfinished_run_to_resume(fold_dir, stamp) is True
    with pytest.raises(RuntimeError, match=r"fold_0 holds an unfinished run of .*'FMABS_EPOCHS': '20'.*another --workdir"):
        la.unfinished_run_to_resume(fold_dir, {**stamp, "FMABS_EPOCHS": "80"})
    (fold_dir / "la_table1_run.json").unlink()  # a run started before stamps were written at the start
    assert la.unfinished_run_to_resume(fold_dir, stamp) is True  # the trainer itself refuses other FMABS_* values


def test_fold_cases_writes_nnunets_split(la, tmp_path):
    folder = tmp_path / "Dataset992_LA"
    (folder / "nnUNetPlans_3d_fullres").mkdir(parents=True)
    for i in range(10):
        (folder / "nnUNetPlans_3d_fullres" / f"c{i:02d}.pkl").write_bytes(b"")
    tr, val = la.fold_cases(folder, "0")
    assert len(tr) == 8 and len(val) == 2 and not set(tr) & set(val)
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    assert json.loads((folder / "splits_final.json").read_text()) == \
        generate_crossval_split([f"c{i:02d}" for i in range(10)], seed=12345, n_splits=5)
    assert la.fold_cases(folder, "all") == ([f"c{i:02d}" for i in range(10)],) * 2
    (folder / "nnUNetPlans_3d_fullres" / "c10.pkl").write_bytes(b"")  # a split written before this case was done
    with pytest.raises(RuntimeError, match=r"splits_final.json: fold 0 splits 10 cases, the preprocessed folder "
                                           r"holds 11"):
        la.fold_cases(folder, "0")


def test_unfinished_preprocessing_is_refused(la, tmp_path):
    folder = tmp_path / "Dataset992_LA"
    (folder / "nnUNetPlans_3d_fullres").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"numTraining": 3}))
    for i in range(2):
        (folder / "nnUNetPlans_3d_fullres" / f"c{i:02d}.pkl").write_bytes(b"")
    with pytest.raises(RuntimeError, match=r"holds 2 of the 3 cases .* preprocessing is unfinished"):
        la.preprocessed_in_full(folder)
    (folder / "nnUNetPlans_3d_fullres" / "c02.pkl").write_bytes(b"")
    la.preprocessed_in_full(folder)


def test_dry_run_prints_the_plan_and_writes_nothing(la, tmp_path, capsys):
    workdir = tmp_path / "work"
    assert la.main(["--protocol", "cpu", "--dry-run", "--workdir", str(workdir), "--methods", "SupCrossTrainer",
                    "FMABSTrainer_HER_MV", "--repetitions", "2", "--max-cases", "6"]) == 0
    out = capsys.readouterr().out
    assert not workdir.exists()
    assert "spacing 1.5 mm" in out and "t_max = 400 iterations (20 epochs x 20)" in out
    assert out.count("nnUNetv2_train 992 3d_fullres 0 -tr FMABSTrainer_HER_MV -p nnUNetPlans_fmabsCPU") == 2
    assert "seed0_rep1 (FMABS_SEED=1000)" in out and "first 6 cases" in out
    assert la.main(["--protocol", "paper", "--dry-run", "--workdir", str(workdir), "--device", "cuda",
                    "--test-root", str(tmp_path), "--methods", "SupDenseTrainer"]) == 0
    out = capsys.readouterr().out
    assert "0.625 mm" in out and "t_max = 20000" in out and "nnUNetv2_predict" in out
    assert "-f all" in out and "-device cuda" in out
    with pytest.raises(SystemExit):
        la.main(["--dry-run", "--methods", "NoSuchTrainer"])
    # run settings: passed to every training, the runs in a folder of their own
    assert la.main(["--dry-run", "--workdir", str(workdir), "--methods", "FMABSTrainer_RAND_MV_t0",
                    "--set", "FMABS_CORE_MM=1.5", "--set", "FMABS_REFINE_STEPS=1"]) == 0
    out = capsys.readouterr().out
    assert "seed0_core_mm=1.5,refine_steps=1 (FMABS_SEED=0)" in out
    assert "settings: FMABS_CORE_MM=1.5 FMABS_REFINE_STEPS=1" in out
    with pytest.raises(SystemExit, match="set by the protocol"):
        la.main(["--dry-run", "--set", "FMABS_BUDGET=3"])
    with pytest.raises(SystemExit, match="FMABS_NAME=VALUE"):
        la.main(["--dry-run", "--set", "CORE_MM=1.5"])


def test_trainer_overhead_yf_batches():
    import torch

    ovh = _load("trainer_overhead")
    batch = {"data": torch.randn(4, 1, 8, 8, 8), "target": torch.full((4, 2, 8, 8, 8), 2, dtype=torch.int16),
             "n_labeled": 2}
    (filled,) = ovh.with_yf([batch])
    assert set(torch.unique(filled["target"][:, 1]).tolist()) <= {0, 1}
    assert torch.equal(filled["target"][:, 0], batch["target"][:, 0])
    assert (batch["target"][:, 1] == 2).all()  # the original batch is untouched


def test_pseudolabel_round_with_the_cheap_generalist(tmp_path, capsys):
    plr = _load("pseudolabel_round")
    gt = np.zeros((10, 10, 10), bool)
    gt[3:7, 3:7, 3:7] = True
    teacher = plr.teacher_from_truth(gt)
    assert teacher.sum() == 8 and not (teacher == gt).all()
    from nnunet_fmabs.data.phantom import make_phantom

    data = make_phantom(tmp_path, dataset_id=995, n_train=2, n_test=0, shape=(24, 24, 24), progress=False)
    # the per-N child, in-process here (the script runs it in a fresh subprocess per N)
    assert plr.main(["--child", "2", "--data", str(data), "--generalist", "box_threshold", "--cache", "off"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("RESULT ")][-1]
    row = json.loads(line[len("RESULT "):])
    assert row["n"] == 2 and row["prompted_slices"] > 0 and row["peak_rss_mb"] >= row["rss_after_load_mb"] > 0
    assert 0.0 < row["mean_dice_yf"] <= 1.0


def test_pseudolabel_quality_teachers_fusions_and_table(la_root, capsys):
    """benchmarks/pseudolabel_quality.py: teachers in mm, the fusions against hand-computed votes, the
    native index maps, and a whole run on tiny LA-layout cases with the cheap stand-in generalist."""
    plq = _load("pseudolabel_quality")
    gt = np.zeros((30, 30, 30), bool)
    gt[10:20, 10:20, 10:20] = True
    dilated = plq.simulated_teacher("dilated", gt, 1.5, seed=0)  # 3 mm = 2 voxels of 1.5 mm
    assert dilated[8:22, 10:20, 10:20].all() and not dilated[7, 15, 15]
    eroded = plq.simulated_teacher("eroded", gt, 1.5, seed=0)
    assert eroded.sum() == 6 ** 3
    blobs = plq.simulated_teacher("gt+blobs", gt, 1.5, seed=0)
    assert (blobs & ~gt).any() and not plq.simulated_teacher("gt+blobs", gt, 1.5, seed=0)[gt].sum() < gt.sum()
    # fusions: three views and a teacher, one voxel each combination
    views = [np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 0], bool), np.array([0, 0, 0, 0, 1], bool)]
    teacher = np.array([0, 1, 1, 0, 0], bool)
    as3d = [v.reshape(5, 1, 1) for v in views]
    t3d = teacher.reshape(5, 1, 1)
    assert plq.guarded(as3d, t3d, 1.0, "MV").ravel().tolist() == [1, 0, 0, 0, 1]
    assert plq.guarded(as3d, t3d, 1.0, "T+3v>=3").ravel().tolist() == [0, 0, 0, 0, 0]
    assert plq.guarded(as3d, t3d, 1.0, "MV|T&G").ravel().tolist() == [1, 1, 1, 0, 1]
    assert plq.guarded(as3d, t3d, 1.0, "MV&T+1").ravel().tolist() == [1, 0, 0, 0, 0]
    # per-slice acceptance: a slice whose IoU is low is the teacher's
    scores = ({0: 0.5, 1: 0.95, 4: 0.95}, {0: 0.95}, {0: 0.95})  # view 0's slice 0 becomes the teacher's (0)
    assert plq.guarded(as3d, t3d, 1.0, "MV@iou>=0.8", scores).ravel().tolist() == [0, 0, 0, 0, 1]
    # native index maps: 1.5 mm index i sits at native 2.4 i
    maps = plq.native_maps((3, 4, 5), (7, 9, 12), 1.5)
    assert maps[0].tolist() == [0, 2, 5] and maps[2].tolist() == [0, 2, 5, 7, 10]
    # the whole script on tiny cases, stand-in generalist, 1.5 mm and raw@1.5
    root, _ = la_root
    rows = plq.main(["--la-root", str(root), "--cases", "2", "--resolutions", "1.5", "raw@1.5", "--teachers", "gt",
                     "dilated", "--recipes", "paper", "default", "--generalist", "box_threshold"])
    assert len(rows) == 2 * 2 * 2 * 2
    assert {r["resolution"] for r in rows} == {"1.5", "raw@1.5"}
    assert all(0.0 <= r["MV"] <= 1.0 and r["prompted"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| resolution | teacher | recipe | n | Dice teacher |" in out and "over-segmenting (mean)" in out


def _write_metrics(workdir: Path, run: str, method: str, dice: dict[str, float]) -> None:
    folder = workdir / "metrics" / run
    folder.mkdir(parents=True, exist_ok=True)
    cases = {c: {"1": {"dice": d, "hd95": 10 * (1 - d)}} for c, d in dice.items()}
    (folder / f"{method}.json").write_text(json.dumps({"cases": cases}))


def test_paired_comparison_against_the_references_of_the_same_seed(tmp_path):
    paired = _load("la_paired")
    _write_metrics(tmp_path, "seed0", "SupCrossTrainer", {"a": 0.60, "b": 0.70})
    _write_metrics(tmp_path, "seed1", "SupCrossTrainer", {"a": 0.50, "b": 0.80})
    _write_metrics(tmp_path, "seed0", "FMABS", {"a": 0.70, "b": 0.60})           # +10, -10: mean 0, wins 1
    _write_metrics(tmp_path, "seed1", "FMABS", {"a": 0.62, "b": 0.84})           # +12, +4: mean +8, wins 2
    _write_metrics(tmp_path, "seed0_pl_source=teacher", "FMABS", {"a": 0.66, "b": 0.70})  # +6, 0: +3, wins 1
    _write_metrics(tmp_path, "seed2", "FMABS", {"a": 0.90, "b": 0.90})           # no reference of seed 2
    rows = {(r["method"], r["settings"]): r for r in paired.paired_rows(
        paired.load_scores(tmp_path), ["SupCrossTrainer"])}
    fm = rows[("FMABS", "")]
    assert fm["runs"] == ["seed0", "seed1", "seed2"]
    assert fm["per_run"] == pytest.approx([65.0, 73.0, 90.0]) and fm["mean"] == pytest.approx(76.0)
    # paired t over the four case differences +10, -10, +12, +4: mean 4, sd sqrt(296 / 3), t = 4 / (sd / 2)
    assert fm["vs"]["SupCrossTrainer"] == {"diff": pytest.approx(4.0), "wins": 3, "cases": 4, "runs": 2,
                                           "t": pytest.approx(4 / ((296 / 3) ** 0.5 / 2))}
    assert rows[("FMABS", "pl_source=teacher")]["vs"]["SupCrossTrainer"] == {
        "diff": pytest.approx(3.0), "wins": 1, "cases": 2, "runs": 1, "t": pytest.approx(1.0)}  # +6, 0
    assert rows[("SupCrossTrainer", "")]["vs"] == {}  # not compared with itself
    # a distance: lower is better, so a case wins where it is smaller (seed 0: hd95 3 vs 4 on "a" only)
    hd = {(r["method"], r["settings"]): r for r in paired.paired_rows(
        paired.load_scores(tmp_path, "hd95"), ["SupCrossTrainer"], "hd95")}
    assert hd[("FMABS", "pl_source=teacher")]["vs"]["SupCrossTrainer"]["wins"] == 1
    assert hd[("FMABS", "pl_source=teacher")]["vs"]["SupCrossTrainer"]["diff"] == pytest.approx(-0.3)
    assert hd[("FMABS", "pl_source=teacher")]["vs"]["SupCrossTrainer"]["t"] == pytest.approx(-1.0)  # -0.6, 0
    table = paired.main(["--workdir", str(tmp_path), "--references", "SupCrossTrainer"])
    assert "| `FMABS` | - | seed0, seed1, seed2 | 65.00, 73.00, 90.00 | **76.00** | +4.00 (2 runs; 3 of 4; t +0.8) |" \
        in table
    # an ablation of the same seed as the reference: FMABS against its own pl_source=teacher run (seed 0 only)
    ablation = {(r["method"], r["settings"]): r for r in paired.paired_rows(
        paired.load_scores(tmp_path), ["FMABS@pl_source=teacher"])}
    assert ablation[("FMABS", "")]["vs"]["FMABS@pl_source=teacher"] == {  # +4, -10: mean -3, wins 1
        "diff": pytest.approx(-3.0), "wins": 1, "cases": 2, "runs": 1, "t": pytest.approx(-3 / (98 / 2) ** 0.5)}
    assert paired.paired_t([1.0]) is None and paired.paired_t([2.0, 2.0]) is None  # one case; no spread
    assert ablation[("FMABS", "pl_source=teacher")]["vs"] == {}  # not compared with itself
    assert ablation[("SupCrossTrainer", "")]["vs"]["FMABS@pl_source=teacher"]["diff"] == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="expected METHOD or METHOD@SETTINGS"):
        paired.paired_rows(paired.load_scores(tmp_path), ["@pl_source=teacher"])


def test_paired_comparison_refuses_other_test_scans_and_foreign_folders(tmp_path):
    paired = _load("la_paired")
    with pytest.raises(FileNotFoundError, match="no scored run"):
        paired.load_scores(tmp_path)
    _write_metrics(tmp_path, "seed0", "SupCrossTrainer", {"a": 0.6, "b": 0.7})
    _write_metrics(tmp_path, "seed0", "FMABS", {"a": 0.6, "c": 0.7})
    with pytest.raises(ValueError, match=r"run seed0: FMABS .*different test scans: \['b', 'c'\]"):
        paired.paired_rows(paired.load_scores(tmp_path), ["SupCrossTrainer"])
    with pytest.raises(ValueError, match="case a has no 'asd'"):
        paired.load_scores(tmp_path, "asd")
    _write_metrics(tmp_path, "old_run", "FMABS", {"a": 0.6})
    with pytest.raises(ValueError, match="old_run: not a la_table1 run folder"):
        paired.load_scores(tmp_path)


def _write_demo_metrics(workdir: Path, trainer: str, dice: dict[str, float]) -> None:
    folder = workdir / "predictions" / trainer
    folder.mkdir(parents=True)
    (folder / "fmabs_metrics.json").write_text(json.dumps({"cases": {c: {"1": {"dice": d}} for c, d in dice.items()}}))


def test_demo_seeds_scores_the_demos_own_scans_and_all_of_them(tmp_path):
    seeds = _load("demo_seeds")
    # 10 test scans: the demo's 8 (000-007) and two more; FM-ABS 0.1 above Sup cross on the first 8, 0.3 below on
    # the last two (0.2 vs 0.5 there): first 8 +10.00, all (8 * 0.1 - 2 * 0.3) / 10 = +2.00, wins 8 of 10
    cases = [f"phantom_test_{i:03d}" for i in range(10)]
    sup = {c: 0.5 for c in cases}
    fm = {c: (0.6 if i < 8 else 0.2) for i, c in enumerate(cases)}
    _write_demo_metrics(tmp_path, "SupCrossTrainer", sup)
    _write_demo_metrics(tmp_path, "FMABSTrainer_HER_MV", fm)
    text = seeds.summary(tmp_path, 3, ["FMABS_LAMBDA_SAM_SCHEDULE=guarded"])
    lines = text.splitlines()
    assert "seed 3" in lines[0] and "FMABS_LAMBDA_SAM_SCHEDULE=guarded" in lines[0]
    assert "first 8 test scans" in lines[0] and "all 10" in lines[0]
    assert lines[1].split()[1:] == ["60.00", "/", "52.00"]  # FM-ABS: (8 * 0.6 + 2 * 0.2) / 10
    assert lines[2].split()[1:] == ["50.00", "/", "50.00"]
    assert "+10.00 /  +2.00" in lines[3] and "wins 8 of 10" in lines[3]
    with pytest.raises(SystemExit):
        seeds.main(["--workdir", str(tmp_path / "w"), "--n-test", "4"])  # fewer than the demo's 8
