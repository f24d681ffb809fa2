"""nnU-Net trainers of FM-ABS: one paradigm trainer, named variants as one-line subclasses.

nnU-Net finds them through ``nnUNet_extTrainer`` (set at interpreter start by ``nnunet_fmabs.pth``).
``TRAINER_NAMES`` is derived from the classes (``variants.__all__``), never listed by hand.
"""
from nnunet_fmabs.trainers import variants as _variants
from nnunet_fmabs.trainers.fmabs_trainer import FMABSTrainer
from nnunet_fmabs.trainers.sup_dense import SupDenseTrainer
from nnunet_fmabs.trainers.variants import *  # noqa: F401,F403 - every named variant

TRAINER_NAMES = ["FMABSTrainer", "SupDenseTrainer", *_variants.__all__]
__all__ = list(TRAINER_NAMES)
