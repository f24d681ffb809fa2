"""What nnU-Net's ``verify_dataset_integrity`` checks, run in-process (it spawns a pool: seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nnunetv2.experiment_planning.verify_dataset_integrity import check_cases, verify_labels
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets


def assert_valid_nnunet_raw(folder: Path) -> dict:
    """Assert ``folder`` is a raw dataset nnU-Net plans and trains on; return its dataset.json."""
    dataset_json = json.loads((folder / "dataset.json").read_text())
    for key in ("labels", "channel_names", "numTraining", "file_ending"):
        assert key in dataset_json, key
    dataset = get_filenames_of_train_images_and_targets(str(folder), dataset_json)
    assert len(dataset) == dataset_json["numTraining"] > 0
    expected_labels = LabelManager(dataset_json["labels"], regions_class_order=None).all_labels
    assert list(np.ediff1d(expected_labels)) == [1] * (len(expected_labels) - 1)
    first_image = next(iter(dataset.values()))["images"][0]
    reader = determine_reader_writer_from_dataset_json(dataset_json, first_image)
    for case in dataset.values():
        assert Path(case["label"]).is_file(), case["label"]
        assert len(case["images"]) == len(dataset_json["channel_names"])
        assert verify_labels(case["label"], reader, expected_labels), case["label"]
        assert check_cases(case["images"], case["label"], len(dataset_json["channel_names"]), reader), case
    # the test split: one label per image, same identifiers
    ending = dataset_json["file_ending"]
    test_images = sorted(p.name[: -len("_0000" + ending)] for p in (folder / "imagesTs").glob("*" + ending))
    test_labels = sorted(p.name[: -len(ending)] for p in (folder / "labelsTs").glob("*" + ending))
    assert test_images == test_labels
    assert len(test_images) == dataset_json.get("numTest", len(test_images))
    return dataset_json
