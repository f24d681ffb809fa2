"""SupDenseTrainer: the paper's fully supervised upper bound (Table 1, "Sup (dense)").

nnU-Net's own trainer on every dense label, with the paper's schedule: t_max = 20,000 iterations,
SGD lr 0.01, poly decay 0.9. FMABS_EPOCHS / FMABS_ITERATIONS_PER_EPOCH shrink it for quick runs.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_fmabs.settings import RunSettings
from nnunet_fmabs.trainers.common import AtomicCheckpointMixin, PaperScheduleMixin


class SupDenseTrainer(AtomicCheckpointMixin, PaperScheduleMixin, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._apply_paper_schedule(RunSettings.from_environ())
