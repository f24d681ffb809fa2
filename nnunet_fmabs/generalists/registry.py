"""Name -> generalist class, as timm's ``register_model``; plugins come through entry points.

Built-in families register themselves when :mod:`nnunet_fmabs.generalists` is imported (their
modules import no optional dependency at import time). Third-party packages declare

    [project.entry-points."nnunet_fmabs.generalists"]
    my_sam = "my_package.module:MySamGeneralist"

and are listed without being imported, imported when asked for by name (the rules of
:class:`nnunet_fmabs.registry.Registry`, shared with samplers and experts).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

from nnunet_fmabs.registry import Registry

ENTRY_POINT_GROUP = "nnunet_fmabs.generalists"
DEFAULT_GENERALIST = "litemedsam"
_T = TypeVar("_T", bound=type)


def _on_register(name: str, cls: type) -> None:
    spec = getattr(cls, "weights", None)
    if spec is not None:  # a plugin bringing its own weights
        from .weights import register_weights

        register_weights(spec)
        if "weights_name" not in cls.__dict__:
            cls.weights_name = spec.name
    cls.name = name


GENERALISTS = Registry("generalist", ENTRY_POINT_GROUP, on_register=_on_register)


def register_generalist(name: str) -> Callable[[_T], _T]:
    """Class decorator: register a :class:`Generalist` subclass under ``name``."""
    return GENERALISTS.register(name)


def declare_plugins(folder: str | os.PathLike, distribution: str, plugins: dict[str, str],
                    group: str = ENTRY_POINT_GROUP) -> Path:
    """Declare ``{name: "module:Class"}`` in ``group`` without installing a package: a minimal
    ``<distribution>-0.dist-info`` under ``folder``, which importlib.metadata finds once ``folder``
    is on ``sys.path`` (``PYTHONPATH`` for nnU-Net's subprocesses). Returns ``folder``."""
    folder = Path(folder)
    info = folder / f"{distribution.replace('-', '_')}-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in plugins.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    return folder


def available_generalists() -> list[str]:
    """Names of the built-in generalists and of those plugins declare (not imported), sorted."""
    return sorted(GENERALISTS.names())


def load_generalist_plugins() -> list[str]:
    """Import every declared plugin (so that the weights they bring are known); broken ones warn."""
    return GENERALISTS.load_all()


def generalist_class(name: str) -> type:
    """The class registered under ``name``; unknown names raise ValueError listing the known ones."""
    return GENERALISTS.get(name)


def get_generalist(name: str = DEFAULT_GENERALIST, checkpoint=None, device="cpu", **options):
    """A ready generalist (model loaded once per process, frozen) by name.

    ``options`` go to the class: ``dtype``, ``batch_size``, ``decode_batch_size``, ``cache``
    (an :class:`EmbeddingCache`), ``use_points``.
    """
    return generalist_class(name)(checkpoint=checkpoint, device=device, **options)
