"""Dataset makers and converters that write nnU-Net raw datasets.

- :func:`make_phantom`: a synthetic MRI-like one-organ dataset for CPU-scale runs (:mod:`.phantom`).
- :func:`convert_la`: the left-atrium MRI from the UA-MT layout (:mod:`.la`).

Names are resolved lazily, so importing this package loads neither SimpleITK nor h5py.
"""
from __future__ import annotations

import importlib

__all__ = ["make_phantom", "convert_la", "LAConversionError"]
_WHERE = {"make_phantom": "phantom", "convert_la": "la", "LAConversionError": "la"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
