"""One registry type for every pluggable part: generalists (2.2), active samplers (2.3) and experts (2.3).

Built-ins register with a class decorator; third-party packages declare entry points,

    [project.entry-points."nnunet_fmabs.generalists"]     # or .samplers, .experts
    my_sam = "my_package.module:MySamGeneralist"

which are listed without importing them and imported only when asked for by name (or by
:meth:`Registry.load_all`). The same rules everywhere: a name is found exactly, else ignoring case
when that is unambiguous; a name cannot be taken twice; an unknown name lists the known ones; a
plugin that fails to import is named with its error.
"""
from __future__ import annotations

import importlib.metadata
import warnings
from typing import Callable, TypeVar

_T = TypeVar("_T", bound=type)


def group_entry_points(group: str) -> list:
    """The installed entry points of ``group`` (importlib.metadata; a seam for tests)."""
    return list(importlib.metadata.entry_points(group=group))


class Registry:
    """Name -> class for one kind of part, with its entry-point group."""

    def __init__(self, kind: str, group: str, on_register: Callable[[str, type], None] | None = None):
        self.kind, self.group, self._on_register = kind, group, on_register
        self._classes: dict[str, type] = {}
        self._broken: dict[str, Exception] = {}

    # -- registering --------------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[_T], _T]:
        """Class decorator: register ``cls`` under ``name`` (a name taken by another class is refused)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorate(cls: _T) -> _T:
            known = self._classes.get(name)
            if known is not None and known is not cls and \
                    (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):  # not a reload
                raise ValueError(f"{self.kind} name {name!r} is taken by {known.__module__}.{known.__qualname__}")
            if self._on_register is not None:
                self._on_register(name, cls)
            self._classes[name] = cls
            return cls

        return decorate

    # -- finding ------------------------------------------------------------------------------------
    def entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The group's entry points by name, not loaded."""
        return {ep.name: ep for ep in group_entry_points(self.group)}

    def names(self) -> list[str]:
        """Registered names (registration order), then plugin names not imported yet (sorted)."""
        return list(self._classes) + sorted(n for n in self.entry_points() if n not in self._classes)

    def resolve(self, name: str) -> str:
        """``name`` as registered or declared: exact, else the one name equal ignoring case."""
        if name in self._classes:  # no entry-point scan for what is registered already
            return name
        known = self.names()
        if name in known:
            return name
        folded = [n for n in known if n.lower() == str(name).lower()]
        if len(folded) == 1:
            return folded[0]
        raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(known)}")

    def get(self, name: str) -> type:
        """The class of ``name``, importing its plugin on first use."""
        name = self.resolve(name)
        if name in self._classes:
            return self._classes[name]
        if name in self._broken:
            error = self._broken[name]
            raise ImportError(f"{self.kind} plugin {name!r} failed to load: {error!r}") from error
        entry = self.entry_points()[name]
        try:
            loaded = entry.load()
        except Exception as error:  # noqa: BLE001 - any import-time failure of third-party code
            self._broken[name] = error
            raise ImportError(f"{self.kind} plugin {name!r} ({entry.value}) failed to load: {error!r}") from error
        if name not in self._classes:  # a class (registered here under its entry-point name) or a module
            if not isinstance(loaded, type):  # that should have registered the name when imported
                raise ImportError(f"{self.kind} plugin {name!r} ({entry.value}) is not a class and registered "
                                  f"no {self.kind} of that name")
            self.register(name)(loaded)
        return self._classes[name]

    def load_all(self) -> list[str]:
        """Import every declared plugin (those that fail are skipped with a warning); all names, sorted."""
        for name in self.entry_points():
            if name in self._classes or name in self._broken:
                continue
            try:
                self.get(name)
            except (ImportError, ValueError) as error:
                warnings.warn(str(error))
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes
