"""3D Slicer segmentations (``.seg.nrrd``) as the human expert's label files (2.3, human loop).

3D Slicer's Segment Editor saves a segmentation, not a label map: named segments, possibly in several
layers (overlapping segments make the voxel array 4D), stored on the reference image's grid but
cropped to the labeled extent. :func:`read_seg_nrrd` turns such a file into a label volume on the raw
image's grid, read with ``slicerio`` (the Slicer team's reader, which knows the layers and the header).

Segments become label values by these rules, in order:

1. the segment's name is a label name of the dataset (``dataset.json`` ``labels``; case, spaces and
   underscores ignored): that label;
2. a dataset with one foreground label and a file with one segment: that label (Slicer names a new
   segment "Segment_1");
3. otherwise the segment's label value in the file, when it is a label of the dataset: that is what
   Slicer keeps when the pre-filled NIfTI file was loaded as a label map and converted (a warning says
   which segment went where).

Anything else, or two segments of different labels on one voxel, is an error naming the file.
"""
from __future__ import annotations

import os
import warnings
from typing import Mapping

import numpy as np

SEG_NRRD = ".seg.nrrd"
GRID_TOLERANCE = 1e-3  # voxels: a cropped segmentation's origin must fall on the reference grid


class SlicerSegmentationError(ValueError):
    """The ``.seg.nrrd`` file cannot become a label volume on the raw image's grid."""


def _normalised(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).casefold()


def segment_labels(segments: list[dict], label_names: Mapping[str, int], max_label: int,
                   path: str | os.PathLike = "") -> tuple[dict[str, int], list[str]]:
    """Segment ID -> label value (the rules of the module docstring), and notes for what rule 3 decided."""
    names = {_normalised(k): int(v) for k, v in label_names.items()}
    foreground = sorted({v for v in names.values() if v > 0}) or list(range(1, max_label + 1))
    out, notes, unmatched = {}, [], []
    for s in segments:
        value = names.get(_normalised(s.get("name", "")))
        if value is not None:
            out[s["id"]] = value
        else:
            unmatched.append(s)
    if unmatched and len(segments) == 1 and len(foreground) == 1:
        out[unmatched[0]["id"]] = foreground[0]
        return out, notes
    for s in unmatched:
        value = s.get("labelValue")
        if value is None or not 0 <= int(value) <= max_label:
            known = ", ".join(f"'{k}' ({v})" for k, v in sorted(label_names.items(), key=lambda kv: kv[1]))
            raise SlicerSegmentationError(
                f"{path}: segment '{s.get('name')}' (label value {value}) matches no label of the dataset; "
                f"rename it in 3D Slicer's Segment Editor to one of: {known or f'0..{max_label}'}")
        out[s["id"]] = int(value)
        notes.append(f"segment '{s.get('name')}' -> label {int(value)} (its label value in the file)")
    return out, notes


def _reference_matrix(spacing, origin, direction) -> np.ndarray:
    """ITK's index (i, j, k) -> physical LPS point, as a 4x4 matrix (what slicerio calls ijkToLPS)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    m[:3, 3] = np.asarray(origin, dtype=float)
    return m


def read_seg_nrrd(path: str | os.PathLike, size: tuple[int, int, int], spacing, origin, direction,
                  label_names: Mapping[str, int], max_label: int) -> np.ndarray:
    """Label volume (z, y, x: nnU-Net's raw array order) on the grid of an image of ITK ``size``, ``spacing``,
    ``origin`` and ``direction``, from a 3D Slicer segmentation file. Voxels outside the file's (cropped)
    extent are background; the file's grid must be the image's (same axes and spacing, origin on a voxel)."""
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as e:  # noqa: BLE001 - pynrrd and slicerio raise many kinds; the file is what is wrong
        raise SlicerSegmentationError(f"{path}: cannot be read as a 3D Slicer segmentation "
                                      f"({type(e).__name__}: {e})") from None
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim not in (3, 4):
        raise SlicerSegmentationError(f"{path}: a {voxels.ndim}D voxel array; a segmentation is 3D (one layer) "
                                      "or 4D (layers of overlapping segments)")
    ref = _reference_matrix(spacing, origin, direction)
    ijk_to_lps = np.asarray(seg["ijkToLPS"], dtype=float)
    scale = np.abs(ref[:3, :3]).max()
    if not np.allclose(ijk_to_lps[:3, :3], ref[:3, :3], atol=1e-4 * scale, rtol=0):
        raise SlicerSegmentationError(
            f"{path}: its voxel grid (axes x spacing {np.round(ijk_to_lps[:3, :3], 5).tolist()}) is not the "
            f"image's ({np.round(ref[:3, :3], 5).tolist()}); segment on the queried image itself "
            "(Segment Editor: master volume = the image) and save again")
    offset = np.linalg.solve(ref[:3, :3], ijk_to_lps[:3, 3] - ref[:3, 3])
    if np.abs(offset - np.round(offset)).max() > GRID_TOLERANCE:
        raise SlicerSegmentationError(f"{path}: its origin lies between the image's voxels (index offset "
                                      f"{np.round(offset, 4).tolist()}); segment on the queried image itself")
    offset = np.round(offset).astype(int)

    mapping, notes = segment_labels(list(seg["segments"]), label_names, max_label, path)
    stored = voxels.shape[-3:]  # (i, j, k)
    label = np.zeros(stored, dtype=np.uint8 if max_label < 256 else np.uint16)
    owner = np.zeros(stored, dtype=bool)
    for s in seg["segments"]:
        mask = np.asarray(slicerio.segment_mask(seg, s), dtype=bool)
        value = mapping[s["id"]]
        clash = mask & owner & (label != value)
        if clash.any():
            raise SlicerSegmentationError(
                f"{path}: segment '{s.get('name')}' (label {value}) overlaps another label's segment on "
                f"{int(clash.sum())} voxels; a voxel can hold one label only")
        label[mask] = value
        owner |= mask
    if notes:
        from nnunet_fmabs.annotation.human import AnnotationWarning

        warnings.warn(f"{path}: " + "; ".join(notes), AnnotationWarning)

    out = np.zeros(tuple(int(n) for n in size), dtype=label.dtype)  # (i, j, k) on the image's grid
    src, dst = [], []
    for axis in range(3):
        lo, hi = offset[axis], offset[axis] + stored[axis]
        a, b = max(lo, 0), min(hi, int(size[axis]))
        if a >= b:
            return out.transpose(2, 1, 0)  # the stored extent lies outside the image: nothing labeled
        src.append(slice(a - lo, b - lo))
        dst.append(slice(a, b))
    out[tuple(dst)] = label[tuple(src)]
    return out.transpose(2, 1, 0)
