"""Imported at interpreter start by ``nnunet_fmabs.pth``: make nnU-Net's trainer lookup find ours.

nnU-Net >= 2.8 scans the folders listed in ``nnUNet_extTrainer`` (os.pathsep separated). We append
our re-export folder, keeping what the user set. Nothing is imported but the standard library, and
the package itself is located without importing it (no torch, no nnU-Net at interpreter start).
"""
import importlib.util
import os


def _extend_ext_trainer_path() -> None:
    spec = importlib.util.find_spec("nnunet_fmabs")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = os.path.join(list(spec.submodule_search_locations)[0], "_nnunet_ext")
    current = os.environ.get("nnUNet_extTrainer", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if folder not in parts:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(parts + [folder])


try:
    _extend_ext_trainer_path()
except Exception:  # never break interpreter start-up
    pass
