"""Weights: where they are found, the table for the CLI, downloads, and bad checkpoints."""
from __future__ import annotations

import re
import shutil

import pytest
import torch

from nnunet_fmabs.generalists import CheckpointError, download_weights, generalist_status, weights_table
from nnunet_fmabs.generalists.checkpoints import read_state_dict
from nnunet_fmabs.generalists.mobilesam import MobileSAM
from .conftest import TinySam
from nnunet_fmabs.generalists.weights import (WEIGHTS, bundled_path, file_sha256, resolve_checkpoint,
                                               verify_weights, weights_spec)

ENV_VARS = {"litemedsam": "FMABS_LITEMEDSAM_CHECKPOINT", "mobilesam": "FMABS_MOBILESAM_CHECKPOINT",
            "sam_vit_b": "FMABS_SAM_VIT_B_CHECKPOINT", "sam_vit_l": "FMABS_SAM_VIT_L_CHECKPOINT",
            "sam_vit_h": "FMABS_SAM_VIT_H_CHECKPOINT", "medsam": "FMABS_MEDSAM_CHECKPOINT",
            "sam2_hiera_tiny": "FMABS_SAM2_HIERA_TINY_CHECKPOINT", "sam2_hiera_small": "FMABS_SAM2_HIERA_SMALL_CHECKPOINT",
            "sam2_hiera_base_plus": "FMABS_SAM2_HIERA_BASE_PLUS_CHECKPOINT",
            "sam2_hiera_large": "FMABS_SAM2_HIERA_LARGE_CHECKPOINT",
            "sam2.1_hiera_tiny": "FMABS_SAM2_1_HIERA_TINY_CHECKPOINT",
            "sam2.1_hiera_small": "FMABS_SAM2_1_HIERA_SMALL_CHECKPOINT",
            "sam2.1_hiera_base_plus": "FMABS_SAM2_1_HIERA_BASE_PLUS_CHECKPOINT",
            "sam2.1_hiera_large": "FMABS_SAM2_1_HIERA_LARGE_CHECKPOINT", "medsam2": "FMABS_MEDSAM2_CHECKPOINT"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FMABS_WEIGHTS_DIR", str(tmp_path / "weights"))


def test_every_generalist_has_its_environment_variable():
    assert {name: spec.env_var for name, spec in WEIGHTS.items()} == ENV_VARS


def test_checkpoint_from_argument_environment_bundle_or_download_folder(tmp_path, monkeypatch):
    asset = bundled_path(weights_spec("litemedsam"))
    assert resolve_checkpoint("litemedsam") == asset
    file = tmp_path / "mine.pt"
    file.write_bytes(b"x")
    assert resolve_checkpoint("sam_vit_b", file) == file
    monkeypatch.setenv("FMABS_SAM_VIT_B_CHECKPOINT", str(file))
    assert resolve_checkpoint("sam_vit_b") == file
    monkeypatch.delenv("FMABS_SAM_VIT_B_CHECKPOINT")
    downloaded = tmp_path / "weights" / "sam_vit_b_01ec64.pth"
    downloaded.parent.mkdir()
    downloaded.write_bytes(b"x")
    assert resolve_checkpoint("sam_vit_b") == downloaded


def test_missing_weights_name_the_variable_and_the_official_address(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as error:
        resolve_checkpoint("sam_vit_h")
    assert "FMABS_SAM_VIT_H_CHECKPOINT" in str(error.value)
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in str(error.value)
    with pytest.raises(FileNotFoundError) as error:
        resolve_checkpoint("medsam")
    assert "FMABS_MEDSAM_CHECKPOINT" in str(error.value) and "drive.google.com" in str(error.value)
    monkeypatch.setenv("FMABS_MOBILESAM_CHECKPOINT", str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="nope.pt.*FMABS_MOBILESAM_CHECKPOINT.*MobileSAM/master"):
        MobileSAM()


def test_weights_table_for_the_cli(tmp_path, monkeypatch):
    file = tmp_path / "mobile.pt"
    file.write_bytes(b"x")
    monkeypatch.setenv("FMABS_MOBILESAM_CHECKPOINT", str(file))
    rows = {row["name"]: row for row in weights_table()}
    assert set(rows) == set(ENV_VARS)
    assert rows["litemedsam"]["present"] and rows["mobilesam"]["present"] and not rows["sam_vit_l"]["present"]
    assert rows["mobilesam"]["path"] == str(file)
    assert rows["sam_vit_l"]["path"] == str(tmp_path / "weights" / "sam_vit_l_0b3195.pth")
    assert rows["sam_vit_b"]["url"] == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert all(set(row) == {"name", "env_var", "path", "present", "url", "licence"} for row in rows.values())
    assert rows["sam_vit_h"]["licence"].startswith("Apache-2.0")


def test_generalist_status_for_doctor():
    rows = {row["name"]: row for row in generalist_status()}
    assert rows["litemedsam"]["present"] and rows["litemedsam"]["dependencies_ok"]
    assert not rows["sam_vit_h"]["present"] and rows["sam_vit_h"]["env_var"] == "FMABS_SAM_VIT_H_CHECKPOINT"


def test_download_from_a_file_url_is_atomic_and_checked(tmp_path):
    source = tmp_path / "served.pt"
    source.write_bytes(b"mobile sam weights")
    target = download_weights("mobilesam", url=source.as_uri())  # no official digest known: no check
    assert target == tmp_path / "weights" / "mobile_sam.pt"
    assert target.read_bytes() == b"mobile sam weights"
    asset = bundled_path(weights_spec("litemedsam"))  # official digest known: checked
    copy = download_weights("litemedsam", dest=tmp_path / "here", url=asset.as_uri())
    assert file_sha256(copy) == WEIGHTS["litemedsam"].sha256
    damaged = tmp_path / "damaged.pth"
    data = bytearray(asset.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped: same size, other digest
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        download_weights("litemedsam", dest=tmp_path / "there.pth", url=damaged.as_uri())
    assert not (tmp_path / "there.pth").exists()
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(ValueError, match="drive.google.com"):
        download_weights("medsam")  # a web folder, not a file


def test_verify_weights_and_digest_memo(tmp_path):
    file = tmp_path / "w.pth"
    file.write_bytes(b"abc")
    first = file_sha256(file)
    file.write_bytes(b"abcd")  # another size: digest recomputed
    assert file_sha256(file) != first
    with pytest.raises(ValueError, match="bytes"):
        verify_weights("sam_vit_b", file)


def test_another_familys_checkpoint_names_missing_and_unexpected_keys():
    asset = bundled_path(weights_spec("litemedsam"))
    with pytest.raises(CheckpointError) as error:
        TinySam(checkpoint=asset)  # TinyViT weights into SAM's ViT
    message = str(error.value)
    assert str(asset) in message and "test_tiny_sam" in message
    assert re.search(r"missing keys: \d+ \(image_encoder\.blocks\.0\.attn", message)
    assert re.search(r"unexpected keys: \d+ \(image_encoder\.layers\.0", message)
    with pytest.raises(CheckpointError) as error:
        MobileSAM(checkpoint=asset)  # same TinyViT, other patch embedding, no classifier head
    message = str(error.value)
    assert "missing keys: 4 (image_encoder.head.bias, image_encoder.head.weight" in message
    assert "shape mismatches: 2 (image_encoder.patch_embed.seq.0.c.weight (32, 3, 1, 1) vs (32, 3, 3, 3)" in message


def test_corrupt_or_truncated_checkpoint_names_the_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.ones(3)}}, good)
    assert list(read_state_dict(good)) == ["w"]  # unwrapped
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "text.pth"
    text.write_text("<html>not found</html>")
    for bad in (truncated, text):
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint {bad}"):
            TinySam(checkpoint=bad)
    shutil.copy(good, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        TinySam(checkpoint=tmp_path / "tiny.pth")


PLUGIN_WITH_WEIGHTS = '''
from nnunet_fmabs.generalists.sam import SamViTB
from nnunet_fmabs.generalists.weights import WeightsSpec


class TinyPluginSam(SamViTB):
    """A third party's family: SAM's code path, a tiny encoder, weights of its own."""

    encoder = (32, 2, 1, (1,))
    weights = WeightsSpec("tiny_plugin_sam", "tiny_plugin_sam.pth", "FMABS_TINY_PLUGIN_SAM_CHECKPOINT",
                          url="https://example.org/tiny_plugin_sam.pth", licence="MIT")
'''


def test_a_plugin_brings_its_own_weights(tmp_path, monkeypatch):
    import sys

    import numpy as np

    from nnunet_fmabs.generalists import available_generalists, get_generalist, registry, weights
    from nnunet_fmabs.generalists.registry import declare_plugins
    from .conftest import save_random_weights

    (tmp_path / "fmabs_weights_plugin.py").write_text(PLUGIN_WITH_WEIGHTS)
    declare_plugins(tmp_path, "fmabs-weights-plugin", {"tinyplug": "fmabs_weights_plugin:TinyPluginSam"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.GENERALISTS, "_classes", dict(registry.GENERALISTS._classes))
    monkeypatch.setattr(weights, "WEIGHTS", dict(weights.WEIGHTS))
    assert "tinyplug" in available_generalists()
    cls = registry.generalist_class("tinyplug")
    assert cls.weights_name == "tiny_plugin_sam"
    rows = {row["name"]: row for row in weights_table()}
    assert rows["tiny_plugin_sam"]["licence"] == "MIT" and not rows["tiny_plugin_sam"]["present"]
    with pytest.raises(FileNotFoundError, match="FMABS_TINY_PLUGIN_SAM_CHECKPOINT"):
        get_generalist("tinyplug")
    (tmp_path / "weights").mkdir()
    save_random_weights(cls, tmp_path / "weights" / "tiny_plugin_sam.pth")  # the plugin's download folder
    generalist = get_generalist("tinyplug")
    assert generalist.checkpoint == tmp_path / "weights" / "tiny_plugin_sam.pth"
    image = np.zeros((24, 20), np.float32)
    image[6:16, 5:12] = 1.0
    masks = generalist.segment([image], np.array([[5, 6, 11, 15]]))
    assert masks[0].shape == (24, 20) and masks[0].dtype == bool
    status = {row["name"]: row for row in generalist_status()}
    assert status["tinyplug"]["present"] and status["tinyplug"]["licence"] == "MIT"
    # another spec under the same weights name is refused
    with pytest.raises(ValueError, match="taken"):
        weights.register_weights(weights.WeightsSpec("tiny_plugin_sam", "other.pth", "X", url="u"))
    sys.modules.pop("fmabs_weights_plugin")


def test_an_explicit_checkpoint_wins_even_without_a_spec(tmp_path):
    file = tmp_path / "fine_tuned.pth"
    file.write_bytes(b"x")
    assert resolve_checkpoint("a_plugin_without_spec", file) == file
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint("a_plugin_without_spec", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no weights known.*WeightsSpec"):
        resolve_checkpoint("a_plugin_without_spec")
