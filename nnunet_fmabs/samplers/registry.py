"""Sampler registry (2.3): built-ins by decorator, third-party samplers by entry point.

A class registers itself with ``@register_sampler("NAME")``; a separate package plugs one in
through the entry-point group ``nnunet_fmabs.samplers`` (``NAME = "pkg.module:Class"``), listed
without being imported and loaded only when ``get_sampler("NAME")`` asks for it (the rules of
:class:`nnunet_fmabs.registry.Registry`, shared with generalists and experts).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from nnunet_fmabs.registry import Registry

ENTRY_POINT_GROUP = "nnunet_fmabs.samplers"
SAMPLERS = Registry("sampler", ENTRY_POINT_GROUP)

T = TypeVar("T", bound=type)


def register_sampler(name: str) -> Callable[[T], T]:
    """Class decorator: register a sampler class under ``name``."""
    return SAMPLERS.register(name)


def available_samplers() -> list[str]:
    """Names of the built-in samplers (registration order), then of plugins (sorted)."""
    return SAMPLERS.names()


def get_sampler(name: str, **kwargs: Any) -> Any:
    """An instance of the sampler registered as ``name`` (exact name first, then ignoring case).

    Plugins are imported here, on first use. Raises ValueError listing the known names when
    ``name`` is unknown, and ImportError naming the plugin when it fails to load.
    """
    resolved = SAMPLERS.resolve(name)
    cls = SAMPLERS.get(resolved)
    sampler = cls(**kwargs)
    for attribute in ("score", "higher_is_better"):
        if not hasattr(sampler, attribute):
            raise TypeError(f"sampler {resolved!r} ({cls!r}) has no attribute {attribute!r}")
    return sampler
