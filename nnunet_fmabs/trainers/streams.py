"""Two-stream batches of barely supervised training (2.1, 2.3, section 3 "batch 2 + 2").

Every iteration takes B cross-labeled patches and B unlabeled ones. The training view of a scan is
built from the labeled pool only: a labeled scan's target is the ignore value except on its three
expert planes, an unlabeled scan's target is ignore everywhere, and the patch sampler's foreground
locations are recomputed from those planes. nnU-Net's dense seg and its stored foreground locations
are never read here (invariant 2: no leak of dense labels). The fused pseudo label Y_f travels in
nnU-Net's previous-stage slot, so spatial augmentation moves image, target and Y_f together.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

from nnunet_fmabs.annotation.pool import CrossAnnotation, PoolError

MAX_LOCATIONS = 10000  # nnU-Net keeps at most this many sampled locations per class, as we do


class BarelyLabeledDataset(nnUNetBaseDataset):
    """nnU-Net dataset whose targets come from the labeled pool, never from the dense seg.

    ``sources`` maps each labeled case to where its labels are: ``("cross", <annotation .npz>)``
    for three expert planes (the pool's files), or ``("dataset", None)`` when the dataset itself
    is barely labeled (its seg declares nnU-Net's ignore label, so it holds only sparse labels).
    Other cases are unlabeled (ignore everywhere). ``pseudo_dir`` holds the current round's Y_f
    (``<case>.npz`` with ``y``), or is None before the first round.
    """

    def __init__(self, base: nnUNetBaseDataset, identifiers: Sequence[str], sources: dict[str, tuple],
                 ignore_value: int, pseudo_dir: str | None, annotated_key: tuple):
        self.base = base
        self.source_folder = base.source_folder
        self.folder_with_segs_from_previous_stage = None
        self.identifiers = sorted(identifiers)
        self.sources = dict(sources)
        self.ignore_value = int(ignore_value)
        self.pseudo_dir = pseudo_dir
        self.annotated_key = annotated_key

    def load_case(self, identifier):
        data, seg, _, properties = self.base.load_case(identifier)
        shape = tuple(data.shape[1:])
        kind, path = self.sources.get(identifier, ("unlabeled", None))
        if kind == "cross":
            target = CrossAnnotation.load(path).to_volume(shape, self.ignore_value)
        elif kind == "dataset":  # a barely labeled dataset: its seg holds sparse labels only
            target = np.asarray(seg[0]).astype(np.int16)
            target[target < 0] = self.ignore_value
        else:  # unlabeled: the dense seg, if any, is never read
            target = np.full(shape, self.ignore_value, dtype=np.int16)
        properties = dict(properties)
        properties["class_locations"] = annotated_locations(target, self.ignore_value, self.annotated_key,
                                                            seed=_stable_seed(identifier))
        y_f = None
        if self.pseudo_dir is not None:
            y_path = os.path.join(self.pseudo_dir, identifier + ".npz")
            if os.path.isfile(y_path):
                with np.load(y_path) as z:
                    y_f = z["y"].astype(np.int16)
        if y_f is None:
            y_f = np.full(shape, self.ignore_value, dtype=np.int16)
        return data, target[None], y_f, properties

    @staticmethod
    def save_case(*args, **kwargs):  # pragma: no cover - training view only
        raise TypeError("BarelyLabeledDataset is read-only")

    @staticmethod
    def get_identifiers(folder: str):  # pragma: no cover
        raise TypeError("BarelyLabeledDataset takes its identifiers from the pool")


def _stable_seed(identifier: str) -> int:
    import zlib

    return zlib.crc32(identifier.encode()) & 0x7FFFFFFF


def annotated_locations(target: np.ndarray, ignore_value: int, annotated_key: tuple,
                        seed: int = 0) -> dict:
    """Patch-sampling locations from the expert's labels only (nnU-Net's ``class_locations`` format).

    ``annotated_key`` lists every annotated voxel (what nnU-Net uses for datasets with an ignore
    label); each label value present gets its own entry. Coordinates carry a leading channel 0.
    """
    rng = np.random.default_rng(seed)
    out: dict = {}
    labeled = (target != ignore_value) & (target >= 0)
    out[annotated_key] = _sample(np.argwhere(labeled), rng)
    for value in np.unique(target[labeled]):
        if value == 0:
            continue
        out[int(value)] = _sample(np.argwhere(target == value), rng)
    return out


def _sample(coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(coords) > MAX_LOCATIONS:
        coords = coords[np.sort(rng.choice(len(coords), MAX_LOCATIONS, replace=False))]
    return np.concatenate([np.zeros((len(coords), 1), dtype=np.int64), coords], axis=1)


class LabeledStreamLoader(nnUNetDataLoader):
    """Patches centred on annotated voxels, as nnU-Net does for datasets with an ignore label."""

    def __init__(self, *args, annotated_key: tuple, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_ignore = True
        self.annotated_classes_key = annotated_key


class TwoStreamLoader:
    """Concatenates a labeled and an (optional) unlabeled augmenter into one batch per iteration."""

    def __init__(self, labeled, unlabeled=None):
        self.labeled = labeled
        self.unlabeled = unlabeled

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        a = next(self.labeled)
        batch = {"data": a["data"], "target": a["target"], "keys": list(a["keys"]),
                 "n_labeled": a["data"].shape[0]}
        if self.unlabeled is not None:
            b = next(self.unlabeled)
            batch["data"] = torch.cat([a["data"], b["data"]])
            batch["target"] = torch.cat([a["target"], b["target"]])
            batch["keys"] += list(b["keys"])
        return batch

    def finish(self) -> None:
        for aug in (self.labeled, self.unlabeled):
            if aug is not None and hasattr(aug, "_finish"):
                aug._finish()


def make_augmenter(loader, n_processes: int, pin_memory: bool, seed: int):
    """nnU-Net's own augmenters: single-threaded when nnUNet_n_proc_DA=0, else worker processes.

    batchgenerators' DataLoader reseeds numpy from the OS on its first batch (seed None); with
    ``_seed = False`` it keeps the trainer's seeded stream (single-threaded) or the worker's seed.
    """
    loader._seed = False
    if n_processes == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(data_loader=loader, transform=None, num_processes=n_processes,
                                        num_cached=max(2, n_processes), seeds=[seed + i for i in range(n_processes)],
                                        pin_memory=pin_memory, wait_time=0.002)


def fmabs_dataloaders(trainer, sources: dict, pseudo_dir: str | None):
    """An FM-ABS trainer's batches: B patches of the labeled scans (``sources``: their cross labels) plus B of
    the unlabeled ones, Y_f of ``pseudo_dir`` as an extra label channel (nnU-Net's augmentation moves it with
    the target), and nnU-Net's validation stream. Background workers as nnU-Net allows, split between streams."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    patch_size = trainer.configuration_manager.patch_size
    rotation, dummy_2d, initial_patch_size, mirror_axes = \
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    tr_transforms = trainer.get_training_transforms(
        patch_size, rotation, None, mirror_axes, dummy_2d,
        use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=False,
        foreground_labels=trainer.label_manager.foreground_labels, regions=None, ignore_label=None)
    val_transforms = trainer.get_validation_transforms(None, is_cascaded=False,
                                                       foreground_labels=trainer.label_manager.foreground_labels,
                                                       regions=None, ignore_label=trainer.label_manager.ignore_label)
    tr_keys, val_keys = trainer.do_split()
    base = trainer.dataset_class(trainer.preprocessed_dataset_folder, list(tr_keys))
    key = tuple([-1] + list(trainer.label_manager.all_labels))
    labeled = BarelyLabeledDataset(base, list(sources), sources, trainer.ignore_value, pseudo_dir, key)
    if not labeled.identifiers:
        raise PoolError("the labeled pool is empty: no scan to train on")
    n_proc = get_allowed_n_proc_DA()
    per_stream = 0 if n_proc == 0 else max(1, n_proc // 2)
    seed = trainer.settings.seed + 1000 * trainer.current_epoch
    dl_lab = LabeledStreamLoader(labeled, trainer.batch_size, initial_patch_size, patch_size, trainer.label_manager,
                                 oversample_foreground_percent=trainer.oversample_foreground_percent,
                                 transforms=tr_transforms, annotated_key=key)
    streams = [make_augmenter(dl_lab, per_stream, trainer.device.type == "cuda", seed)]
    unlabeled_ids = [c for c in tr_keys if c not in sources]
    if trainer.use_unlabeled_stream and unlabeled_ids:
        unlabeled = BarelyLabeledDataset(base, unlabeled_ids, {}, trainer.ignore_value, pseudo_dir, key)
        dl_unl = nnUNetDataLoader(unlabeled, trainer.batch_size, initial_patch_size, patch_size,
                                  trainer.label_manager, oversample_foreground_percent=0.0, transforms=tr_transforms)
        streams.append(make_augmenter(dl_unl, per_stream, trainer.device.type == "cuda", seed + 500))
    train = TwoStreamLoader(*streams)
    dataset_val = trainer.dataset_class(trainer.preprocessed_dataset_folder, list(val_keys))
    dl_val = nnUNetDataLoader(dataset_val, trainer.batch_size, patch_size, patch_size, trainer.label_manager,
                              oversample_foreground_percent=trainer.oversample_foreground_percent,
                              transforms=val_transforms)
    val = make_augmenter(dl_val, 0 if n_proc == 0 else 1, trainer.device.type == "cuda", seed + 900)
    return train, val
