"""Sampler registry: built-ins by decorator, third-party samplers by entry point.

A class registers itself with ``@register_sampler("NAME")``; a separate package plugs one in
through the entry-point group ``nnunet_fmabs.samplers`` (``NAME = "pkg.module:Class"``), loaded
only when ``get_sampler("NAME")`` asks for it.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, TypeVar

ENTRY_POINT_GROUP = "nnunet_fmabs.samplers"

_REGISTRY: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_sampler(name: str) -> Callable[[T], T]:
    """Class decorator: register a sampler class under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"sampler name must be a non-empty string, got {name!r}")

    def decorator(cls: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"sampler {name!r} is already registered to "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def _plugin_entry_points() -> dict[str, EntryPoint]:
    """Entry points of the group, by name (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_samplers() -> list[str]:
    """Names of the built-in samplers (registration order), then of plugins (sorted)."""
    names = list(_REGISTRY)
    names += sorted(n for n in _plugin_entry_points() if n not in _REGISTRY)
    return names


def get_sampler(name: str, **kwargs: Any) -> Any:
    """An instance of the sampler registered as ``name`` (exact name first, then ignoring case).

    Plugins are imported here, on first use. Raises ValueError listing the known names when
    ``name`` is unknown, and ImportError naming the plugin when it fails to load.
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        plugins = _plugin_entry_points()
        known = list(_REGISTRY) + sorted(n for n in plugins if n not in _REGISTRY)
        resolved = name if name in plugins else None
        if resolved is None:
            folded = [n for n in known if n.lower() == str(name).lower()]
            if len(folded) == 1:
                resolved = folded[0]
        if resolved is None:
            raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(known)}")
        if resolved in _REGISTRY:
            cls = _REGISTRY[resolved]
        else:
            entry_point = plugins[resolved]
            try:
                cls = entry_point.load()
            except Exception as error:  # report which plugin broke, keep the cause
                raise ImportError(
                    f"sampler plugin {resolved!r} ({entry_point.value}) failed to load: {error}"
                ) from error
        name = resolved
    sampler = cls(**kwargs)
    for attribute in ("score", "higher_is_better"):
        if not hasattr(sampler, attribute):
            raise TypeError(f"sampler {name!r} ({cls!r}) has no attribute {attribute!r}")
    return sampler
