"""``nnunet-fmabs export-pool RUN_DIR OUT``: the labeled pool of a run as an nnU-Net raw dataset.

Each labeled scan becomes ``imagesTr/<case>_XXXX<ending>`` (the run's raw images, copied) and
``labelsTr/<case><ending>``: the expert's three planes (2.1) on the raw image's grid, the ignore label
everywhere else. ``dataset.json`` is the run's, with an ``ignore`` label (nnU-Net's sparse-annotation
support: the highest label) and the provenance under ``fmabs_export``. Stock
``nnUNetv2_plan_and_preprocess`` and ``nnUNetv2_train -tr nnUNetTrainer`` read the result; it is what
an nnU-Net user trains or shares.

Planes are stored on nnU-Net's preprocessed grid; they go back to the raw grid by the same
nearest-neighbour index maps as the human loop's files (``annotation.geometry``): where preprocessing
resampled, a raw plane takes the labels of its nearest preprocessed voxels. Nothing of the run is
changed; OUT appears complete or not at all (built beside it, then renamed).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from nnunet_fmabs.annotation.geometry import CaseGeometry
from nnunet_fmabs.annotation.human import RawGeometry
from nnunet_fmabs.annotation.pool import LabeledPool
from nnunet_fmabs.annotation.status import POOL_FILE, RunLayout, RunLayoutError, RunStateError, _read_json

DATASET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")


class ExportError(RunLayoutError):
    """The pool cannot be exported (missing inputs, a taken output, labels nnU-Net cannot hold)."""


def ignore_label_value(labels: dict) -> int:
    """The ignore value of a dataset's ``labels``: its own ``ignore`` entry, else max label + 1."""
    if "ignore" in labels:
        return int(labels["ignore"])
    values = list(labels.values())
    if any(not isinstance(v, int) for v in values):
        raise ExportError("region-based labels (tuples in dataset.json's 'labels') cannot be exported with an "
                          "ignore label by this command")
    return max(values) + 1


def export_pool(run_dir: str | os.PathLike, out: str | os.PathLike, *, raw_root: str | os.PathLike | None = None,
                preprocessed_root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Write the labeled pool of the fold folder ``run_dir`` as the nnU-Net raw dataset ``out``
    (a folder named ``DatasetXXX_Name`` that must not exist). Returns ``out``."""
    from nnunetv2.paths import nnUNet_raw
    from tqdm import tqdm

    run_dir, out = Path(run_dir), Path(out)
    pool_path = run_dir / POOL_FILE
    if not pool_path.is_file():
        raise RunStateError(f"{run_dir} has no FM-ABS pool ({POOL_FILE} is missing); give the fold folder of an "
                            "FM-ABS run")
    if not DATASET_NAME.match(out.name):
        raise ExportError(f"{out}: nnU-Net finds raw datasets by folder name; name it DatasetXXX_Name "
                          "(three digits, an id no other dataset uses), e.g. Dataset501_LAPool")
    if out.exists():
        raise ExportError(f"{out} already exists; choose another folder (nothing is overwritten)")
    layout = RunLayout.of(run_dir, preprocessed_root)
    dataset, dataset_json = layout.dataset, layout.dataset_json
    raw_root = Path(raw_root or (nnUNet_raw or ""))
    if not str(raw_root) or not (raw_root / dataset / "imagesTr").is_dir():
        raise ExportError(f"the run's raw images are needed: {raw_root / dataset / 'imagesTr'} does not exist "
                          "(set nnUNet_raw)")
    layout.require_preprocessed("to map the planes back")
    state = _read_json(pool_path, "pool")
    pool = LabeledPool(pool_path.parent, state)
    cases = pool.labeled_cases
    if not cases:
        raise ExportError(f"{pool_path}: no scan is labeled yet; nothing to export")
    labels = dict(dataset_json["labels"])
    ignore = ignore_label_value(labels)
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    transpose_forward = layout.transpose_forward

    import SimpleITK as sitk

    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "imagesTr").mkdir(parents=True)
    (partial / "labelsTr").mkdir()
    try:
        for case in tqdm(cases, desc="export-pool", disable=not progress):
            images = [raw_root / dataset / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
            missing = [str(p) for p in images if not p.is_file()]
            if missing:
                raise ExportError(f"{case}: raw image(s) missing: {', '.join(missing)}")
            data, _, _, properties = layout.load_case(case)
            geom = CaseGeometry.from_properties(properties, transpose_forward, data.shape)
            ref = RawGeometry.read(images[0])
            if tuple(ref.size) != tuple(reversed(geom.raw_shape)):
                raise ExportError(f"{images[0]}: size {ref.size}, but nnU-Net preprocessed {case} from an image "
                                  f"of size {tuple(reversed(geom.raw_shape))}; was the raw image replaced?")
            label = np.full(geom.raw_shape, ignore, dtype=np.uint8 if ignore < 256 else np.uint16)
            annotation = pool.annotation(case)
            for a, r in enumerate(geom.pp_slices_to_raw(annotation.slices)):
                index: list = [slice(None)] * 3
                index[r["raw_axis"]] = r["index"]
                label[tuple(index)] = geom.pp_plane_to_raw(annotation.planes[a].astype(label.dtype), a, fill=ignore)
            image = sitk.GetImageFromArray(label)
            image.SetSpacing(ref.spacing)
            image.SetOrigin(ref.origin)
            image.SetDirection(ref.direction)
            sitk.WriteImage(image, str(partial / "labelsTr" / f"{case}{ending}"), True)
            for p in images:
                shutil.copy2(p, partial / "imagesTr" / p.name)
        new_json = {**dataset_json, "labels": {**labels, "ignore": ignore}, "numTraining": len(cases),
                    "fmabs_export": {
                        "run": str(run_dir.absolute()), "labeled_scans": cases,
                        "slices_preprocessed": {c: list(pool.annotation(c).slices) for c in cases},
                        "note": ("three labeled planes per scan (the FM-ABS pool); every other voxel carries the "
                                 "ignore label")}}
        (partial / "dataset.json").write_text(json.dumps(new_json, indent=2))
        os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
