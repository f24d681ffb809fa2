"""Name -> generalist class, as timm's ``register_model``; plugins come through entry points.

Built-in families register themselves when :mod:`nnunet_fmabs.generalists` is imported (their
modules import no optional dependency at import time). Third-party packages declare

    [project.entry-points."nnunet_fmabs.generalists"]
    my_sam = "my_package.module:MySamGeneralist"

and are loaded lazily: only when the names are listed or a name is not found among the
registered ones (napari npe2 / pytest style).
"""
from __future__ import annotations

import importlib.metadata
import os
import warnings
from pathlib import Path
from typing import Callable, TypeVar

ENTRY_POINT_GROUP = "nnunet_fmabs.generalists"
DEFAULT_GENERALIST = "litemedsam"

_REGISTRY: dict[str, type] = {}
_BROKEN: dict[str, Exception] = {}  # plugins that failed to load, with why
_T = TypeVar("_T", bound=type)


def register_generalist(name: str) -> Callable[[_T], _T]:
    """Class decorator: register a :class:`Generalist` subclass under ``name``."""

    def decorate(cls: _T) -> _T:
        known = _REGISTRY.get(name)
        if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"generalist name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        spec = getattr(cls, "weights", None)
        if spec is not None:  # a plugin bringing its own weights
            from .weights import register_weights

            register_weights(spec)
            if "weights_name" not in cls.__dict__:
                cls.weights_name = spec.name
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


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


def _load_entry_points() -> None:
    """Import every plugin declared in the entry-point group (a class, or a module that registers).

    A plugin that fails to import is skipped with a warning (one broken package must not hide
    the others); asking for it by name raises its error.
    """
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _REGISTRY or entry.name in _BROKEN:
            continue
        try:
            loaded = entry.load()
        except Exception as error:  # noqa: BLE001  (any import-time failure of third-party code)
            _BROKEN[entry.name] = error
            warnings.warn(f"generalist plugin {entry.name!r} ({entry.value}) failed to load: {error!r}")
            continue
        if isinstance(loaded, type) and entry.name not in _REGISTRY:
            register_generalist(entry.name)(loaded)


def available_generalists() -> list[str]:
    """Names of the built-in generalists and of those plugins declare, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def generalist_class(name: str) -> type:
    """The class registered under ``name``; unknown names raise ValueError listing the known ones."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name in _BROKEN:
        raise ImportError(f"generalist plugin {name!r} failed to load: {_BROKEN[name]!r}") from _BROKEN[name]
    if name not in _REGISTRY:
        raise ValueError(f"unknown generalist {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_generalist(name: str = DEFAULT_GENERALIST, checkpoint=None, device="cpu", **options):
    """A ready generalist (model loaded once per process, frozen) by name.

    ``options`` go to the class: ``dtype``, ``batch_size``, ``decode_batch_size``, ``cache``
    (an :class:`EmbeddingCache`), ``use_points``.
    """
    return generalist_class(name)(checkpoint=checkpoint, device=device, **options)
