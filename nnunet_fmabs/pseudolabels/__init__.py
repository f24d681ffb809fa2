"""Specialist-generalist collaboration (2.2): prompts from the teacher mask, views, UA/MV fusion."""
from nnunet_fmabs.pseudolabels.fusion import FUSION_RULES, apply_expert_labels, fuse
from nnunet_fmabs.pseudolabels.labeler import VolumeLabels, label_from_expert_planes, label_volume
from nnunet_fmabs.pseudolabels.prompts import (BOX_MAX_GROWTH, N_POINTS, SlicePrompt, box_from_mask, grow_box,
                                               sample_points, slice_prompts, volume_prompts)

__all__ = ["FUSION_RULES", "apply_expert_labels", "fuse", "VolumeLabels", "label_from_expert_planes", "label_volume",
           "BOX_MAX_GROWTH", "N_POINTS", "SlicePrompt", "box_from_mask", "grow_box", "sample_points", "slice_prompts",
           "volume_prompts"]
