"""``nnunet-fmabs demo``: FM-ABS against Sup-cross on a synthetic phantom, end to end through nnU-Net.

In a work folder of its own (``--workdir``, default ``./fmabs_demo``) the demo

1. writes the phantom dataset (:func:`nnunet_fmabs.data.phantom.make_phantom`);
2. plans and preprocesses it with nnU-Net's own ``nnUNetv2_plan_and_preprocess -c 3d_fullres``;
3. trains ``FMABSTrainer_HER_MV`` (simulated expert, bundled LiteMedSAM as the generalist) and
   ``SupCrossTrainer`` with the same labeling budget through ``nnUNetv2_train``;
4. predicts the test scans with ``nnUNetv2_predict`` and scores both with
   :func:`nnunet_fmabs.evaluation.metrics.evaluate_folders`;
5. prints a small Table-1-like comparison, writes ``WORKDIR/demo_results.json`` and says where the
   pictures are (pseudo labels per view, active-learning curve, loss terms).

Every nnU-Net command runs in a subprocess whose ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results`` point inside the work folder: the user's own nnU-Net folders are never touched
(``nnUNet_extTrainer`` is kept). The user's ``FMABS_*`` variables are not passed on: the demo's
setting is the one written into ``demo_results.json``.

A work folder that exists and is not empty is refused (nothing in it is changed): re-running never
mixes the results of two runs. Remove the folder or pass another ``--workdir``.

Settings (:data:`SETTINGS`): ``default`` fits 15 minutes on two CPU cores; ``smoke`` is the
miniature used by CI (about a minute); ``full`` is the paper's schedule (20,000 iterations) for a GPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from nnunet_fmabs.workspace import NnUNetWorkspace

FMABS = "FMABSTrainer_HER_MV"
SUPCROSS = "SupCrossTrainer"
METHODS = (FMABS, SUPCROSS)
LABELS = {FMABS: "FM-ABS (HER, MV)", SUPCROSS: "Sup-cross (baseline)"}
DATASET_ID = 991
DATASET_NAME = "FMABSPhantom"
DATASET = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
CONFIGURATION = "3d_fullres"
FOLD = "0"
RESULTS_FILE = "demo_results.json"


@dataclass(frozen=True)
class DemoSetting:
    """One demo setting: the phantom, and the FMABS_* knobs both trainers run with."""

    name: str
    shape: tuple[int, int, int]  # phantom NIfTI size (x, y, z)
    n_train: int  # nnU-Net's fold 0 keeps about 80 % of them for training, the rest for validation
    n_test: int
    fmabs: dict[str, str]  # FMABS_* variables (both trainers; knobs of FM-ABS alone are ignored by Sup-cross)
    note: str = ""
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)  # --set on the command line

    def env(self, seed: int) -> dict[str, str]:
        return {**self.fmabs, "FMABS_SEED": str(seed)}


_COMMON = {"FMABS_GENERALIST": "litemedsam", "FMABS_EXPERT": "simulated"}
SMOKE_GENERALIST = "demo_box_threshold"

SETTINGS: dict[str, DemoSetting] = {
    # 15 minutes on two CPU cores (measurements in the module docstring's notes)
    "default": DemoSetting(
        name="default", shape=(32, 32, 32), n_train=6, n_test=8,
        fmabs={**_COMMON,
               "FMABS_BUDGET": "2",  # of fold 0's 4 training scans: 6 labeled slices
               "FMABS_K": "2",  # rounds [1, 1]: 1 random scan at t = 0, 1 picked by HER at t = 0.25 t_max
               # HER's pick at 0.25, not 0.5: a 2-scan budget leaves the student one scan until then, and
               # that wait cost the most (benchmarks/README.md, "Demo": over seeds 0-3, +8.2 Dice on
               # average against 0.5; even a perfect generalist ended 13 below Sup-cross at seed 0 with 0.5)
               "FMABS_AL_SPREAD": "0.25",
               "FMABS_PL_ROUNDS": "0.25,0.5,0.75",  # Y_f with the active round, refreshed twice (decoder
               # only for slices already encoded: the first round encodes nearly every slice)
               "FMABS_EPOCHS": "12", "FMABS_ITERATIONS_PER_EPOCH": "10", "FMABS_VAL_ITERATIONS": "2",
               # the paper grows boxes by 0-10 px on 112-px LA slices; on 32-px slices that is a third of
               # the slice, and Y_f drops from 0.93 to 0.82 Dice even with a perfect teacher (measured):
               # at most 3 px of the phantom's 1.25 mm
               "FMABS_BOX_GROWTH_MM": "3.75",
               # labeled scans' boxes bounded by the expert's planes with no margin (the simulated expert's planes
               # cross the phantom's middle; Y_f 0.91-0.93 on them vs the teacher's 0.28-0.81), with the trainers'
               # guard (margin 0 then: every teacher-prompted round was below the teacher, so today's -0.03 rejects
               # the same ones) and guarded lambda_sam: +8.8 / +1.5 / +4.2 over Sup cross at seeds 0-2
               # (benchmarks/README.md, "Demo", fourteenth session)
               "FMABS_EXPERT_BOUNDS_MM": "0",
               # the teacher's boxes bounded so (above), not the planes alone (an option, measured on LA only)
               "FMABS_EXPERT_PROMPT_GROWTH_MM": "off",
               # auto: bf16 where the CPU has it natively (AVX512-BF16 / AMX: what "bf16" gave before), else
               # fp32 (emulated bf16 is ~10x slower than fp32 on an AVX2-only CPU: BF16_EMULATED)
               "FMABS_GENERALIST_DTYPE": "auto", "FMABS_TTA": "0"},
    ),
    # the CI miniature: a few iterations, one pseudo-label round on a tiny phantom. An untrained
    # teacher marks foreground on every slice, so a LiteMedSAM round would encode all 3 x 24 slices of
    # every training scan (minutes on a CPU): the smoke run uses the box-threshold stand-in instead.
    "smoke": DemoSetting(
        name="smoke", shape=(24, 24, 24), n_train=6, n_test=2,
        fmabs={**_COMMON, "FMABS_GENERALIST": SMOKE_GENERALIST,
               "FMABS_BUDGET": "2", "FMABS_K": "2", "FMABS_WARMUP_FRACTION": "1.0",  # one round, at t = 0
               "FMABS_PL_ROUNDS": "0.5",  # exactly one pseudo-label round
               "FMABS_EPOCHS": "2", "FMABS_ITERATIONS_PER_EPOCH": "2", "FMABS_VAL_ITERATIONS": "1",
               "FMABS_TTA": "0"},
        note=f"smoke: a miniature schedule that only shows the pipeline runs; its numbers mean nothing. "
             f"Generalist: {SMOKE_GENERALIST}, a cheap box-threshold STAND-IN for LiteMedSAM (smoke only; "
             f"the default and --full runs use LiteMedSAM).",
    ),
    # the paper's schedule (section 3): t_max = 20,000 iterations, 25 % budget, K = 2, 8 Y_f rounds
    "full": DemoSetting(
        name="full", shape=(64, 64, 48), n_train=40, n_test=10,
        fmabs={**_COMMON, "FMABS_BUDGET": "25%", "FMABS_K": "2", "FMABS_TTA": "1"},
        note="full: the paper's schedule (20,000 iterations); meant for a GPU (--device cuda)",
    ),
}


# -- entry point ------------------------------------------------------------------------------------
def _settings_overrides(items: list[str]) -> dict[str, str]:
    """``--set FMABS_NAME=VALUE`` (repeatable): run settings (:class:`RunSettings`) on top of the chosen
    setting, for both trainers; a name that is not a run setting is refused (a typo would be ignored)."""
    from nnunet_fmabs.settings import RunSettings, env_name

    known = {env_name(f.name) for f in dataclasses.fields(RunSettings)} - {"FMABS_SEED"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if key == "FMABS_SEED":
            raise ValueError("--set FMABS_SEED: use --seed")
        if not sep or not value or key not in known:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
        out[key] = value
    return out


def run_demo(args, setting: DemoSetting | None = None) -> int:
    """The ``demo`` subcommand. ``args``: workdir, device, smoke, full, seed. Returns the exit status."""
    started = time.time()
    if args.smoke and args.full:
        raise ValueError("--smoke and --full exclude each other")
    if setting is None:
        setting = SETTINGS["smoke" if args.smoke else "full" if args.full else "default"]
    overrides = _settings_overrides(getattr(args, "set", None) or [])
    if overrides:
        setting = dataclasses.replace(setting, fmabs={**setting.fmabs, **overrides}, overrides=overrides)
    device = str(args.device)
    if device not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device!r}: use cpu, cuda or mps")
    workdir = Path(args.workdir).expanduser().resolve()
    _claim_workdir(workdir)
    seed = int(args.seed)
    demo = _Demo(workdir, setting, device, seed)
    changed = "".join(f" {k}={v}" for k, v in setting.overrides.items())
    print(f"nnunet-fmabs demo ({setting.name}{' with' + changed if changed else ''}): work folder {workdir}")
    if setting.note:
        print(setting.note)
    return demo.run(started)


def _claim_workdir(workdir: Path) -> None:
    """Refuse a work folder that holds anything: two runs' results are never mixed."""
    if workdir.exists():
        if not workdir.is_dir():
            raise FileExistsError(f"--workdir {workdir} exists and is not a folder")
        if any(workdir.iterdir()):
            hint = " (it holds an earlier demo's results)" if (workdir / RESULTS_FILE).exists() or \
                (workdir / "logs").is_dir() else ""
            raise FileExistsError(
                f"--workdir {workdir} is not empty{hint}. The demo never mixes two runs and never deletes "
                f"anything: remove the folder (rm -r {workdir}) or pass another --workdir.")
    workdir.mkdir(parents=True, exist_ok=True)


class _Demo:
    def __init__(self, workdir: Path, setting: DemoSetting, device: str, seed: int):
        self.workdir = workdir
        self.setting = setting
        self.device = device
        self.seed = seed
        self.workspace = NnUNetWorkspace(workdir, device=device)
        self.raw, self.results = self.workspace.raw, self.workspace.results
        self.predictions = workdir / "predictions"
        self.logs = workdir / "logs"
        self.timings: dict[str, float] = {}

    # -- environment of the nnU-Net subprocesses -------------------------------------------------
    def train_env(self) -> dict[str, str]:
        env = self.workspace.env(**self.setting.env(self.seed))
        if env.get("FMABS_GENERALIST") == SMOKE_GENERALIST:
            plugins = _declare_smoke_plugin(self.workdir / "plugins")
            env["PYTHONPATH"] = os.pathsep.join([str(plugins)] + [p for p in [env.get("PYTHONPATH")] if p])
        return env

    exe = staticmethod(NnUNetWorkspace.exe)

    # -- steps --------------------------------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[["_Step"], None]]]:
        return [
            ("phantom dataset", self.make_dataset),
            ("nnU-Net plan and preprocess", self.plan),
            *[(f"train {m}", (lambda s, m=m: self.train(s, m))) for m in METHODS],
            *[(f"predict {m}", (lambda s, m=m: self.predict(s, m))) for m in METHODS],
            ("evaluate", self.evaluate),
        ]

    def run(self, started: float) -> int:
        self.workspace.create()
        for d in (self.predictions, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        steps = self.steps()
        self.metrics: dict[str, dict] = {}
        interactive = sys.stdout.isatty()  # a log file or CI gets plain lines, no bar redraws
        bar = tqdm(total=len(steps), desc="demo", unit="step", dynamic_ncols=True, file=sys.stdout,
                   disable=not interactive,
                   bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar:20}| {elapsed}{postfix}")
        try:
            for i, (title, fn) in enumerate(steps, 1):
                label = f"demo [{i}/{len(steps)}] {title}"
                bar.set_description(label)
                if not interactive:
                    print(label, flush=True)
                t0 = time.time()
                fn(_Step(bar, title, interactive))
                self.timings[title] = round(time.time() - t0, 1)
                if not interactive:
                    print(f"{label}: done in {self.timings[title]:.0f} s", flush=True)
                bar.set_postfix_str("")
                bar.update(1)
        finally:
            bar.close()
        wall = time.time() - started
        results = self.results_json(wall)
        from nnunet_fmabs import atomic

        atomic.write_json(self.workdir / RESULTS_FILE, results)
        print()
        print(self.report(results))
        return 0

    def make_dataset(self, step: "_Step") -> None:
        from nnunet_fmabs.data.phantom import make_phantom

        s = self.setting
        make_phantom(self.raw, dataset_id=DATASET_ID, name=DATASET_NAME, n_train=s.n_train, n_test=s.n_test,
                     shape=s.shape, seed=self.seed, progress=False)
        step.info(f"{s.n_train} training + {s.n_test} test scans of {s.shape[0]}x{s.shape[1]}x{s.shape[2]} voxels "
                  f"in {self.raw / DATASET}")

    def plan(self, step: "_Step") -> None:
        n = str(max(1, min(4, os.cpu_count() or 1)))  # nnU-Net's default of 8 fingerprint workers swamps a laptop
        step.run([self.exe("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIGURATION,
                  "-np", n, "-npfp", n], self.workspace.plan_env(), self.logs / "plan_and_preprocess.log")

    def fold_dir(self, trainer: str) -> Path:
        return self.workspace.fold_dir(DATASET, trainer, FOLD, CONFIGURATION)

    def train(self, step: "_Step", trainer: str) -> None:
        step.run([self.exe("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, FOLD, "-tr", trainer,
                  "-device", self.device], self.train_env(), self.logs / f"train_{trainer}.log")

    def predict(self, step: "_Step", trainer: str) -> None:
        out = self.predictions / trainer
        cmd = [self.exe("nnUNetv2_predict"), "-i", str(self.raw / DATASET / "imagesTs"), "-o", str(out),
               "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", FOLD, "-tr", trainer, "-chk",
               "checkpoint_final.pth", "-device", self.device, "-npp", "1", "-nps", "1"]
        if self.setting.fmabs.get("FMABS_TTA") == "0":
            cmd.append("--disable_tta")
        step.run(cmd, self.train_env(), self.logs / f"predict_{trainer}.log")

    def evaluate(self, step: "_Step") -> None:
        from nnunet_fmabs.evaluation.metrics import evaluate_folders

        for trainer in METHODS:
            out = self.predictions / trainer
            self.metrics[trainer] = evaluate_folders(out, self.raw / DATASET / "labelsTs",
                                                     output_json=out / "fmabs_metrics.json")
            step.info(f"{trainer}: mean Dice {self.metrics[trainer]['foreground_mean']['dice']:.4f}")

    # -- results --------------------------------------------------------------------------------------
    def labeled_slices(self, trainer: str) -> int:
        pool = json.loads((self.fold_dir(trainer) / "fmabs" / "pool" / "pool.json").read_text())
        return 3 * len(pool["cases"])

    def pseudo_label_rounds(self, trainer: str) -> list[dict]:
        state = self.fold_dir(trainer) / "fmabs" / "pseudolabels" / "state.json"
        if not state.is_file():
            return []
        rounds = json.loads(state.read_text()).get("rounds", [])
        keep = ("dir", "iteration", "reason", "prompted_slices", "mean_dice_yf", "mean_dice_teacher", "accepted",
                "unprompted_cases")
        return [{k: r[k] for k in keep if k in r} for r in rounds]

    def generalist_label(self) -> str:
        name = self.setting.fmabs.get("FMABS_GENERALIST", "litemedsam")
        if name == SMOKE_GENERALIST:
            return f"{name}, a STAND-IN for LiteMedSAM"
        return f"{name} {self.setting.fmabs.get('FMABS_GENERALIST_DTYPE', 'auto')}"

    def results_json(self, wall: float) -> dict[str, Any]:
        methods = {}
        for trainer in METHODS:
            mean = self.metrics[trainer]["foreground_mean"]
            methods[trainer] = {"dice": mean["dice"], "jaccard": mean["jaccard"], "hd95": mean["hd95"],
                                "asd": mean["asd"], "labeled_slices": self.labeled_slices(trainer)}
        s = self.setting
        settings = {
            "mode": s.name, "device": self.device, "seed": self.seed,
            "dataset": DATASET, "phantom_shape_xyz": list(s.shape), "n_train": s.n_train, "n_test": s.n_test,
            "configuration": CONFIGURATION, "fold": FOLD,
            "fmabs_env": dict(sorted(s.env(self.seed).items())), "set": dict(s.overrides),
            "generalist": s.fmabs.get("FMABS_GENERALIST", "litemedsam"),
            "generalist_dtype": s.fmabs.get("FMABS_GENERALIST_DTYPE", "auto"),
            "expert": s.fmabs.get("FMABS_EXPERT", "auto"),
            "metrics": "mean over the test scans; dice/jaccard in [0, 1]; hd95/asd in voxels "
                       "(nnunet_fmabs.evaluation.metrics)",
            "pseudo_label_rounds": self.pseudo_label_rounds(FMABS),
            "step_seconds": self.timings,
            "workdir": str(self.workdir),
        }
        if s.note:
            settings["note"] = s.note
        return {"methods": methods, "wall_seconds": round(wall, 1), "settings": settings}

    def report(self, results: dict[str, Any]) -> str:
        rows = [("Method", "Labeled slices", "Dice %", "Jaccard %", "95HD vox", "ASD vox")]
        for trainer in METHODS:
            m = results["methods"][trainer]
            rows.append((f"{LABELS[trainer]}  [{trainer}]", str(m["labeled_slices"]), _pct(m["dice"]),
                         _pct(m["jaccard"]), _num(m["hd95"]), _num(m["asd"])))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        rule = "-" * len(fmt(rows[0]))
        s = self.setting
        name = s.name + (" with --set" if s.overrides else "")
        lines = [f"Results on the {s.n_test} test scans of the phantom ({name} setting; same labeling budget, "
                 f"simulated expert, generalist {self.generalist_label()}):", rule, fmt(rows[0]), rule]
        lines += [fmt(r) for r in rows[1:]]
        lines.append(rule)
        gain = results["methods"][FMABS]["dice"] - results["methods"][SUPCROSS]["dice"]
        lines.append(f"FM-ABS - Sup-cross: {100 * gain:+.2f} Dice points")
        for r in results["settings"]["pseudo_label_rounds"]:
            if "mean_dice_yf" in r:
                lines.append(f"  pseudo labels {r['dir']} at iteration {r['iteration']}: Dice of Y_f vs ground truth "
                             f"{100 * r['mean_dice_yf']:.1f} % (teacher {100 * r.get('mean_dice_teacher', math.nan):.1f} %) on the "
                             f"scans prompted, "
                             f"{r.get('prompted_slices', '?')} prompted slices"
                             + ("; rejected by the guard" if r.get("accepted") is False else "")
                             + (f", {r['unprompted_cases']} scans without expert planes not prompted"
                                if r.get("unprompted_cases") else ""))
        if s.note:
            lines.append(s.note)
        f = self.fold_dir(FMABS) / "fmabs"
        lines += ["", "Pictures:",
                  f"  pseudo labels per view, per round: {f / 'pseudolabels' / 'round_NN' / '*.png'}",
                  f"  active-learning curve:             {f / 'active_learning_curve.png'}",
                  f"  loss terms of eq. 1 and 3:         {f / 'loss_terms.png'}",
                  f"Per-case metrics: {self.predictions / '<trainer>' / 'fmabs_metrics.json'}; "
                  f"logs: {self.logs}",
                  f"Wall time {results['wall_seconds'] / 60:.1f} min; written {self.workdir / RESULTS_FILE}"]
        return "\n".join(lines)


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _num(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"


# -- a subprocess under the demo's progress bar ------------------------------------------------------
_ECHO = re.compile(
    r"(Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time|FM-ABS:|active round|pseudo-label round|"
    r"round \d+:|loss_cross|Training done|Predicting|done with|Traceback|Error|error|WARNING|Refusing)")
_TQDM_LINE = re.compile(r"\d+%\|")
_HEARTBEAT_S = 1.0
_SILENCE_S = 60.0


class _Step:
    """Runs one step's commands: every output line goes to a log file, the informative ones are echoed
    above the bar and the latest one is the bar's postfix; a heartbeat redraws the bar every second
    (its clock keeps running while a command is silent) or, without a terminal, prints a line after a
    minute of silence."""

    def __init__(self, bar: tqdm, title: str, interactive: bool = True):
        self.bar = bar
        self.title = title
        self.interactive = interactive
        self._last_output = time.time()
        self._started = time.time()

    def info(self, text: str) -> None:
        tqdm.write(f"  {text}", file=sys.stdout)
        self._last_output = time.time()

    def run(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.info("$ " + " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)))
        tail: list[str] = []
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        heartbeat.start()
        try:
            with open(log, "w", buffering=1) as log_file:
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, bufsize=0)
                try:
                    for text, complete in _lines(proc.stdout):
                        text = text.rstrip()
                        if not text:
                            continue
                        if complete:
                            log_file.write(text + "\n")
                            tail = (tail + [text])[-40:]
                            if _ECHO.search(text) and not _TQDM_LINE.search(text):
                                self.info("  " + text[:200])
                        self.bar.set_postfix_str(_short(text), refresh=False)
                    proc.wait()
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
        finally:
            stop.set()
            heartbeat.join()
        if proc.returncode != 0:
            raise RuntimeError(f"step '{self.title}' failed: {Path(cmd[0]).name} exited {proc.returncode}. "
                               f"Last lines of {log}:\n" + "\n".join("    " + t for t in tail[-25:]))

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(_HEARTBEAT_S):
            if self.interactive:
                self.bar.refresh()
            elif time.time() - self._last_output >= _SILENCE_S:
                self.info(f"  ... {self.title}: still running ({time.time() - self._started:.0f} s)")


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _lines(stream):
    """Yield (text, complete) from a byte stream: complete lines end in \\n; tqdm's \\r updates are
    yielded as incomplete (shown on the bar, not logged)."""
    buffer = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            break
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            piece, sep, buffer = buffer[:cut], buffer[cut:cut + 1], buffer[cut + 1:]
            yield piece.decode(errors="replace"), sep == b"\n"
    if buffer:
        yield buffer.decode(errors="replace"), True


# -- the smoke run's stand-in generalist --------------------------------------------------------------
class DemoBoxGeneralist:
    """``--smoke`` only: a stand-in for LiteMedSAM that thresholds each slice at the mean intensity
    inside the prompt's box. Cheap and deterministic, enough to run every step of a pseudo-label round
    in CI; it is no foundation model. The training subprocesses find it through an entry point that
    the demo declares in ``WORKDIR/plugins`` (put on their PYTHONPATH)."""

    def __init__(self, checkpoint=None, device="cpu", **options):
        self.calls = 0

    def segment(self, slices, boxes, points=None):
        import numpy as np

        masks = []
        for image, box in zip(slices, np.asarray(boxes)):
            self.calls += 1
            h, w = image.shape
            x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
            x1, y1 = min(int(box[2]), w - 1), min(int(box[3]), h - 1)
            mask = np.zeros((h, w), dtype=bool)
            if x1 >= x0 and y1 >= y0:
                region = np.nan_to_num(np.asarray(image[y0:y1 + 1, x0:x1 + 1], dtype=np.float32))
                mask[y0:y1 + 1, x0:x1 + 1] = region > region.mean()
            masks.append(mask)
        return masks


def _declare_smoke_plugin(folder: Path) -> Path:
    """A dist-info folder declaring :class:`DemoBoxGeneralist` in the generalists' entry-point group."""
    from nnunet_fmabs.generalists.registry import declare_plugins

    return declare_plugins(folder, "nnunet-fmabs-demo-smoke",
                           {SMOKE_GENERALIST: "nnunet_fmabs.demo:DemoBoxGeneralist"})
