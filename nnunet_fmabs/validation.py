"""Early, clear errors on a dataset that FM-ABS cannot use (before nnU-Net's own asserts)."""
from __future__ import annotations


class DatasetError(ValueError):
    """The dataset's dataset.json does not fit barely supervised training."""


def check_labels(labels: dict, where: str, binary: bool) -> None:
    """Labels of ``dataset.json`` (at ``where``): a foreground label exists; ``ignore``, if declared,
    has the highest value; a binary-only path (FM-ABS pseudo labels) gets exactly one foreground."""
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{where}: no 'labels' declared: this dataset has no labels to learn from")
    values = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DatasetError(f"{where}: label {name!r} is a region {value}; FM-ABS needs plain labels")
        values[name] = int(value)
    foreground = {n: v for n, v in values.items() if v != 0 and n != "ignore"}
    if not foreground:
        raise DatasetError(f"{where}: only {sorted(values)} declared, no foreground label: nothing to segment")
    if "ignore" in values and values["ignore"] != max(values.values()):
        raise DatasetError(
            f"{where}: the ignore label is {values['ignore']}, but nnU-Net needs it to be the highest value "
            f"(labels: {values}). Renumber it to {max(values.values()) + 1} in dataset.json and in the label files."
        )
    if binary and len(foreground) != 1:
        raise DatasetError(
            f"{where}: FM-ABS pseudo labels are binary (one organ, as in the paper), but the dataset has "
            f"{len(foreground)} foreground labels {sorted(foreground)}. Use SupCrossTrainer or MeanTeacherTrainer, "
            "or make one binary dataset per structure."
        )
