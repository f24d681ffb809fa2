"""Loading a checkpoint into a family's architecture, strictly, with errors that say what is wrong.

DESIGN invariant 5: the generalist is frozen and loaded once per process; :func:`frozen_model`
keeps the loaded models keyed by (name, checkpoint file, device, dtype).
"""
from __future__ import annotations

import os
import pickle
import threading
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

EXAMPLES = 4


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to another architecture."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (``weights_only=True``), unwrapped from ``model``/``state_dict``."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch file "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
    for wrapper in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors ({type(loaded).__name__})")
    return loaded


def _examples(keys: list[str]) -> str:
    shown = ", ".join(keys[:EXAMPLES])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > EXAMPLES else ''})"


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike, family: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming missing/unexpected/mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_examples(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_examples(unexpected)}")
        if misshaped:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in misshaped]
            parts.append(f"shape mismatches: {_examples(shapes)}")
        raise CheckpointError(f"checkpoint {path} does not fit the {family} architecture "
                              f"(another family's weights?): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


_MODELS: dict[tuple, nn.Module] = {}
_LOCK = threading.Lock()


def file_signature(path: Path) -> tuple[str, int, int]:
    """(real path, mtime, size): a checkpoint replaced on disk is loaded again."""
    stat = path.stat()
    return os.path.realpath(path), stat.st_mtime_ns, stat.st_size


def frozen_model(name: str, path: Path, device: torch.device, dtype: torch.dtype,
                 build: Callable[[], nn.Module]) -> nn.Module:
    """The family's model with the checkpoint loaded, on ``device``, eval and frozen; once per process.

    ``.eval()`` comes after the load and the move: TinyViT caches its attention biases when
    ``.eval()`` is called, so an ``.eval()`` before loading would keep the initial biases
    (mobile_sam's own ``build_sam_vit_t`` has that bug).
    """
    key = (name, file_signature(path), str(device), str(dtype))
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            state = read_state_dict(path)
            model = build()
            load_strict(model, state, path, name)
            model.to(device)
            model.eval()
            model.requires_grad_(False)
            _MODELS[key] = model
        return model


def clear_model_cache() -> None:
    """Forget the loaded models (tests, or to free memory)."""
    with _LOCK:
        _MODELS.clear()
