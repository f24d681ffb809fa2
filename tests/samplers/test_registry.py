from importlib.metadata import EntryPoint

import pytest

import nnunet_fmabs.samplers as samplers
from nnunet_fmabs.samplers import registry
from nnunet_fmabs.samplers.registry import ENTRY_POINT_GROUP


class ToySampler:
    """A third-party sampler: scores every scan by its number of voxels."""

    name = "toy"
    higher_is_better = True
    needs_probabilities = True

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def score(self, probs, t=0, t_max=1):
        return float(probs[0].size) + self.offset


def _fake_entry_points(*eps):
    def entry_points(group):
        return list(eps) if group == ENTRY_POINT_GROUP else []

    return entry_points


def test_builtins_listed_and_found():
    assert samplers.available_samplers()[:4] == ["random", "LC", "HE", "HER"]
    for name, cls in [
        ("random", samplers.RandomSampler),
        ("LC", samplers.LCSampler),
        ("HE", samplers.HESampler),
        ("HER", samplers.HERSampler),
    ]:
        sampler = samplers.get_sampler(name)
        assert isinstance(sampler, cls) and sampler.name == name
    assert isinstance(samplers.get_sampler("her"), samplers.HERSampler)  # case-insensitive


def test_unknown_sampler_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'.*random, LC, HE, HER"):
        samplers.get_sampler("nope")


def test_register_sampler_decorator(monkeypatch):
    monkeypatch.setattr(registry.SAMPLERS, "_classes", dict(registry.SAMPLERS._classes))

    @samplers.register_sampler("toy_registered")
    class Registered(ToySampler):
        pass

    assert "toy_registered" in samplers.available_samplers()
    assert isinstance(samplers.get_sampler("toy_registered", offset=1.0), Registered)
    with pytest.raises(ValueError, match="sampler name 'toy_registered' is taken by"):
        samplers.register_sampler("toy_registered")(ToySampler)


def test_entry_point_plugin_is_listed_without_loading_and_loaded_on_use(monkeypatch):
    good = EntryPoint("toy", f"{__name__}:ToySampler", ENTRY_POINT_GROUP)
    broken = EntryPoint("broken", "nnunet_fmabs_no_such_module:Sampler", ENTRY_POINT_GROUP)
    monkeypatch.setattr("nnunet_fmabs.registry.group_entry_points", _fake_entry_points(good, broken))
    monkeypatch.setattr(registry.SAMPLERS, "_classes", dict(registry.SAMPLERS._classes))
    # listing does not import the broken plugin
    assert samplers.available_samplers() == ["random", "LC", "HE", "HER", "broken", "toy"]
    toy = samplers.get_sampler("toy", offset=0.5)
    assert isinstance(toy, ToySampler) and toy.offset == 0.5
    with pytest.raises(ImportError, match="'broken'"):
        samplers.get_sampler("broken")
    with pytest.raises(ValueError, match="HER, toy, broken"):  # toy is registered once imported
        samplers.get_sampler("missing")


def test_plugin_without_score_is_rejected(monkeypatch):
    ep = EntryPoint("bad", "builtins:object", ENTRY_POINT_GROUP)
    monkeypatch.setattr("nnunet_fmabs.registry.group_entry_points", _fake_entry_points(ep))
    monkeypatch.setattr(registry.SAMPLERS, "_classes", dict(registry.SAMPLERS._classes))
    with pytest.raises(TypeError, match="score"):
        samplers.get_sampler("bad")
