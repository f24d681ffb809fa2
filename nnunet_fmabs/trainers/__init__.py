"""nnU-Net trainers of FM-ABS: one paradigm trainer, named variants as one-line subclasses.

nnU-Net finds them through ``nnUNet_extTrainer`` (set at interpreter start by ``nnunet_fmabs.pth``).
"""
from nnunet_fmabs.trainers.fmabs_trainer import FMABSTrainer
from nnunet_fmabs.trainers.sup_dense import SupDenseTrainer
from nnunet_fmabs.trainers.variants import (FMABSTrainer_HE_MV, FMABSTrainer_HE_UA, FMABSTrainer_HER_MV,
                                            FMABSTrainer_HER_UA, FMABSTrainer_LC_MV, FMABSTrainer_LC_UA,
                                            FMABSTrainer_RAND_MV, FMABSTrainer_RAND_MV_noCons,
                                            FMABSTrainer_RAND_MV_noSAM, FMABSTrainer_RAND_MV_t0, FMABSTrainer_RAND_UA,
                                            FMABSTrainer_RAND_UA_t0, MeanTeacherTrainer,
                                            SupCrossTrainer, UAMTTrainer)

TRAINER_NAMES = [
    "FMABSTrainer", "SupDenseTrainer", "SupCrossTrainer", "MeanTeacherTrainer", "UAMTTrainer",
    "FMABSTrainer_RAND_UA", "FMABSTrainer_RAND_MV", "FMABSTrainer_LC_UA", "FMABSTrainer_LC_MV",
    "FMABSTrainer_HE_UA", "FMABSTrainer_HE_MV", "FMABSTrainer_HER_UA", "FMABSTrainer_HER_MV",
    "FMABSTrainer_RAND_MV_noSAM", "FMABSTrainer_RAND_MV_noCons", "FMABSTrainer_RAND_MV_t0", "FMABSTrainer_RAND_UA_t0",
]
__all__ = TRAINER_NAMES
