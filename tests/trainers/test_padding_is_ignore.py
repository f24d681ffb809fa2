"""Issue 3: voxels that augmentation pads outside the image are ignore, not background."""
from __future__ import annotations

import numpy as np
import torch


def test_padded_voxels_become_ignore_in_target_and_pseudo_label(trainer_inputs):
    from nnunet_fmabs.trainers import FMABSTrainer_RAND_MV

    plans, dataset_json = trainer_inputs
    trainer = FMABSTrainer_RAND_MV({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json,
                                   device=torch.device("cpu"))
    ignore = trainer.ignore_value
    assert ignore == 2  # one past the highest label of a dense binary dataset
    transforms = trainer.get_training_transforms((24, 24, 24), ((0, 0),) * 3, None, (), False,
                                                 use_mask_for_norm=[False], is_cascaded=False,
                                                 foreground_labels=[1], regions=None, ignore_label=None)
    np.random.seed(1)  # nnU-Net's augmentation draws its random scaling from these streams
    torch.manual_seed(1)
    image = torch.randn(1, 16, 16, 16)
    seg = torch.zeros(2, 16, 16, 16, dtype=torch.int16)  # channel 0: target, channel 1: Y_f
    seg[0, 8] = 1  # an expert plane, and background elsewhere on it
    seg[1] = 1
    out = transforms(image=image, segmentation=seg)["segmentation"]
    assert out.shape == (2, 24, 24, 24)
    border = np.zeros((24, 24, 24), bool)
    border[:4], border[-4:], border[:, :4], border[:, -4:], border[:, :, :4], border[:, :, -4:] = (True,) * 6
    assert (out[:, torch.from_numpy(border)] == ignore).all()  # padding: ignore in both channels
    assert (out[1, 4:20, 4:20, 4:20] == 1).all()
    assert not (out == -1).any() and not (out[:, torch.from_numpy(border)] == 0).any()
