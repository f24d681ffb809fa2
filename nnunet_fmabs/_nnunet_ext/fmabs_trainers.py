"""Scanned by nnU-Net through ``nnUNet_extTrainer``: re-exports only (classes defined here would be
imported under a bare module name and fail to pickle)."""
from nnunet_fmabs.trainers import *  # noqa: F401,F403
