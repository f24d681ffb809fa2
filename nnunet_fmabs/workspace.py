"""A sandboxed nnU-Net workspace: the demo, the benchmarks and the tests set nnU-Net up through this one class.

    ws = NnUNetWorkspace(Path("work"))
    ws.make_phantom(dataset_id=501, n_train=6, n_test=2, shape=(32, 32, 32))
    ws.plan(501)                                 # nnU-Net's own nnUNetv2_plan_and_preprocess
    ws.run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "FMABSTrainer_HER_MV"], ws.env(FMABS_K="1"))

Three folders under one root (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results`` by default); the
environment of nnU-Net's commands points at them and drops the caller's ``FMABS_*`` settings, so that a run
gets only the settings it is given; nnU-Net's executables are taken beside this interpreter first.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CONFIGURATION = "3d_fullres"


@dataclass
class NnUNetWorkspace:
    """nnU-Net's raw / preprocessed / results folders under ``root``, and how to run its commands there.

    ``device="cpu"``: data augmentation in the main process (``nnUNet_n_proc_DA=0``; on a few CPU cores
    worker processes only compete with the network) and no ``torch.compile``.
    """

    root: Path
    device: str = "cpu"
    folder_names: tuple[str, str, str] = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def raw(self) -> Path:
        return self.root / self.folder_names[0]

    @property
    def preprocessed(self) -> Path:
        return self.root / self.folder_names[1]

    @property
    def results(self) -> Path:
        return self.root / self.folder_names[2]

    def create(self) -> "NnUNetWorkspace":
        for folder in (self.raw, self.preprocessed, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    # -- environment and commands ------------------------------------------------------------------
    def env(self, **settings: str) -> dict[str, str]:
        """The environment of nnU-Net's commands here: the caller's, without its ``FMABS_*``, plus ``settings``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FMABS_")}
        env.update({"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                    "nnUNet_results": str(self.results), "PYTHONUNBUFFERED": "1"})
        if self.device == "cpu":
            env.update({"nnUNet_n_proc_DA": "0", "nnUNet_compile": "0"})
        env.update({k: str(v) for k, v in settings.items()})
        return env

    def plan_env(self, **settings: str) -> dict[str, str]:
        """:meth:`env` for the planner, which needs at least one worker process."""
        env = self.env(**settings)
        env.pop("nnUNet_n_proc_DA", None)
        return env

    @staticmethod
    def exe(name: str) -> str:
        """An installed command: beside this interpreter (a virtual environment), else on PATH."""
        local = Path(sys.executable).parent / name
        if local.exists():
            return str(local)
        found = shutil.which(name)
        if not found:
            raise FileNotFoundError(f"{name} not found beside {sys.executable} nor on PATH: is nnunetv2 installed?")
        return found

    def run(self, args: list[str], env: dict[str, str] | None = None, *, log: Path | None = None,
            timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """:func:`run_command` in this workspace's environment (or ``env``)."""
        return run_command(args, self.env() if env is None else env, log=log, timeout=timeout, check=check)

    # -- datasets --------------------------------------------------------------------------------------
    def make_phantom(self, dataset_id: int, **phantom) -> Path:
        """The synthetic MRI-like dataset (:func:`nnunet_fmabs.data.phantom.make_phantom`) in ``raw``."""
        from nnunet_fmabs.data.phantom import make_phantom

        self.create()
        return make_phantom(self.raw, dataset_id=dataset_id, progress=False, **phantom)

    def plan(self, dataset_id: int, configuration: str = CONFIGURATION, processes: int = 1,
             log: Path | None = None, **settings: str) -> None:
        """nnU-Net's ``nnUNetv2_plan_and_preprocess`` for one configuration."""
        n = str(processes)
        self.run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", n, "-npfp", n],
                 self.plan_env(**settings), log=log)

    def fold_dir(self, dataset: str, trainer: str, fold: int | str = 0, configuration: str = CONFIGURATION,
                 plans: str = "nnUNetPlans") -> Path:
        """nnU-Net's output folder of one training."""
        return self.results / dataset / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"


def run_command(args: list[str], env: dict[str, str], *, log: Path | None = None, timeout: float | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (its name resolved by :meth:`NnUNetWorkspace.exe`); output captured, or appended to
    ``log``. ``check``: a failure raises RuntimeError with the command and the end of its output."""
    command = [args[0] if os.path.isabs(args[0]) else NnUNetWorkspace.exe(args[0]), *map(str, args[1:])]
    if log is None:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        tail = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            proc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        tail = f"--- end of {log}\n{log.read_text()[-6000:]}"
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}\n{tail}")
    return proc
