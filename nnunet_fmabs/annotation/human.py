"""The human expert: a person cross-labels the queried scans in an image viewer (2.3, FMABS_EXPERT=human).

One round goes through two processes:

1. The trainer queries scans; :meth:`HumanExpert.answer` finds no ``queries.json`` in the round's
   folder ``<queries_root>/round_NN/``, so it writes one label file per scan, in the raw image's
   geometry and pre-filled on the three slices with the current model's prediction (0 elsewhere),
   then ``queries.json`` (last, atomically: it marks the round's files as complete). It returns
   None; the trainer saves a checkpoint and exits with :meth:`HumanExpert.waiting_message`.
2. The person edits the files in place and resumes (``nnUNetv2_train ... --c``). ``answer`` now
   finds ``queries.json``, checks every file (present, same geometry as the raw image, labels in
   0..max_label, actually edited) and maps the three raw planes into nnU-Net's preprocessed space:
   ``{case: CrossAnnotation}`` for :meth:`LabeledPool.answer`.

With ``FMABS_HUMAN_WAIT=poll`` the first process does not exit: :meth:`HumanExpert.answer` writes the
files, then checks them every ``FMABS_HUMAN_POLL_SECONDS`` (30) until every file is edited, valid and
unchanged since the previous check (a viewer may be writing it), logging why it still waits; one job
then runs the whole campaign (a cluster job need not be resubmitted each round).

Nothing here changes the pool, and the import only reads the person's files.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_fmabs import atomic
from nnunet_fmabs.annotation.experts import EXPERTS, ExpertContext, ScanAccess
from nnunet_fmabs.annotation.geometry import CaseGeometry, view_names
from nnunet_fmabs.annotation.pool import CrossAnnotation
from nnunet_fmabs.annotation.slicer import SEG_NRRD, SlicerSegmentationError, read_seg_nrrd
from nnunet_fmabs.annotation.slices import select_slices

QUERIES_FILE = "queries.json"
QUERIES_FORMAT = 1
ACCEPT_PREFILL_ENV = "FMABS_ACCEPT_PREFILL"
WAIT_ENV = "FMABS_HUMAN_WAIT"  # exit (default): save, exit with status 3, resume with --c; poll: wait in the job
POLL_ENV = "FMABS_HUMAN_POLL_SECONDS"
WAIT_MODES = ("exit", "poll")
GEOMETRY_RTOL = 1e-4
TOOLS = ("ITK-SNAP", "3D Slicer", "napari")
_ITK_AXIS_NAMES = ("i", "j", "k")


class HumanAnnotationError(RuntimeError):
    """The person's label files cannot be imported (missing, wrong geometry, bad labels, unedited)."""


class AnnotationWarning(UserWarning):
    """Something in the person's files was ignored (labels outside the three slices, unedited files)."""


def round_folder(queries_root: str | os.PathLike, round_number: int) -> Path:
    """``<queries_root>/round_NN``: the files and ``queries.json`` of one round."""
    return Path(queries_root) / f"round_{int(round_number):02d}"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def planes_digest(planes: Sequence[np.ndarray]) -> str:
    """SHA-256 of the label values on the three planes, whatever the file's voxel type."""
    h = hashlib.sha256()
    for plane in planes:
        h.update(str(plane.shape).encode())
        h.update(np.ascontiguousarray(plane, dtype="<f8").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class RawGeometry:
    """Size, spacing, origin and direction of a 3D image, in ITK order (i, j, k)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RawGeometry":
        """From an image file's header (the voxels are not read)."""
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        if reader.GetDimension() != 3:
            raise HumanAnnotationError(f"{path}: a {reader.GetDimension()}D image; only 3D images are supported")
        return cls(tuple(int(i) for i in reader.GetSize()), tuple(float(i) for i in reader.GetSpacing()),
                   tuple(float(i) for i in reader.GetOrigin()), tuple(float(i) for i in reader.GetDirection()))

    @classmethod
    def of_image(cls, image) -> "RawGeometry":
        return cls(tuple(int(i) for i in image.GetSize()), tuple(float(i) for i in image.GetSpacing()),
                   tuple(float(i) for i in image.GetOrigin()), tuple(float(i) for i in image.GetDirection()))

    def differences(self, other: "RawGeometry", rtol: float = GEOMETRY_RTOL) -> list[str]:
        """What differs from ``other`` (size exactly; the rest within ``rtol``, relative to max(|a|, |b|, 1))."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} instead of {other.size}")
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if a.shape != b.shape or np.any(np.abs(a - b) > rtol * np.maximum(np.maximum(abs(a), abs(b)), 1.0)):
                out.append(f"{name} {_fmt(a)} instead of {_fmt(b)}")
        return out


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


@EXPERTS.register("human")
class HumanExpert:
    """A person labels three slices per queried scan in a viewer; see the module docstring."""

    name = "human"

    def __init__(self, queries_root: str | os.PathLike, resume_command: str, file_ending: str = ".nii.gz", *,
                 wait: str = "exit", poll_seconds: float = 30.0, log: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep):
        if not file_ending.startswith("."):
            raise ValueError(f"file_ending must start with a dot, got {file_ending!r}")
        if wait not in WAIT_MODES:
            raise ValueError(f"{WAIT_ENV}={wait!r}: use one of {', '.join(WAIT_MODES)}")
        if not poll_seconds > 0:
            raise ValueError(f"{POLL_ENV}={poll_seconds!r}: must be a positive number of seconds")
        self.queries_root = Path(queries_root)
        self.resume_command = resume_command
        self.file_ending = file_ending
        self.wait, self.poll_seconds, self.log, self.sleep = wait, float(poll_seconds), log, sleep
        self._predictions: dict[str, np.ndarray | None] = {}

    @classmethod
    def from_environ(cls, queries_root, resume_command: str, file_ending: str = ".nii.gz", *,
                     log: Callable[[str], None] = print, environ=None) -> "HumanExpert":
        """The expert with ``FMABS_HUMAN_WAIT`` and ``FMABS_HUMAN_POLL_SECONDS`` read from the environment
        (not run settings: a run may switch between exit and poll from one resume to the next)."""
        environ = os.environ if environ is None else environ
        raw = environ.get(POLL_ENV, "").strip() or "30"
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"{POLL_ENV}={raw!r}: must be a positive number of seconds") from None
        return cls(queries_root, resume_command, file_ending, wait=environ.get(WAIT_ENV, "").strip() or "exit",
                   poll_seconds=seconds, log=log)

    @classmethod
    def for_run(cls, context: ExpertContext) -> "HumanExpert":
        return cls.from_environ(context.queries_root, context.resume_command, context.file_ending, log=context.log)

    @property
    def blocks(self) -> bool:
        """True when :meth:`answer` waits for the person inside the job (poll mode)."""
        return self.wait == "poll"

    # -- the Expert protocol -------------------------------------------------------------------------
    def propose_slices(self, case: str, access: ScanAccess) -> tuple[int, int, int]:
        """Middle of the bounding box of the model's predicted foreground along each preprocessed axis;
        the volume centre without a prediction or foreground."""
        shape = tuple(int(n) for n in access.shape(case))
        pred = self._prediction(case, access, shape)
        if pred is None:
            return tuple(n // 2 for n in shape)  # type: ignore[return-value]
        return select_slices(pred, rule="bbox_middle")

    def answer(self, round_entry: dict, access: ScanAccess) -> dict[str, CrossAnnotation] | None:
        """Write the round's files (first call: returns None) or import them (once ``queries.json`` exists);
        in poll mode write them if needed, then wait here for the person's labels."""
        folder = self.round_folder(round_entry)
        if not (folder / QUERIES_FILE).is_file():
            self._write_round(round_entry, access, folder)
            if not self.blocks:
                return None
        elif not self.blocks:
            return self._import_round(round_entry, access, folder)
        self.log(self.waiting_message(round_entry) + f"\n(or just edit the files: this job checks them every "
                 f"{self.poll_seconds:g} s and goes on once every file is edited and saved; {WAIT_ENV}=poll)")
        return self._poll(round_entry, access, folder)

    def _poll(self, round_entry: dict, access: ScanAccess, folder: Path) -> dict[str, CrossAnnotation]:
        """Check the round's files every ``poll_seconds`` until every one is edited, valid and unchanged since
        the previous check; log each new reason to wait."""
        files = [p for c in round_entry["cases"] for p in self.label_files(round_entry, c)]
        previous, reason = None, None
        while True:
            stamp = [(p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in files]
            if stamp == previous:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        answers = self._import_round(round_entry, access, folder, require_all_edited=True)
                    for w in caught:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    self.log(f"round {round_entry['round']}: the expert's labels are in; training goes on")
                    return answers
                except HumanAnnotationError as e:
                    if str(e) != reason:
                        reason = str(e)
                        self.log(f"waiting for the expert ({time.strftime('%H:%M:%S')}): {reason}")
            previous = stamp
            self.sleep(self.poll_seconds)

    def waiting_message(self, round_entry: dict) -> str:
        """What the person has to do before the resume command, with every path spelled out."""
        folder = self.round_folder(round_entry)
        queries = _load_queries(folder)
        cases = list(round_entry["cases"])
        prefilled = [s.get("prefilled_from") == "prediction" for s in (queries or {}).get("scans", {}).values()]
        what = ("the three slices pre-filled with the current model's prediction, 0 elsewhere" if prefilled
                and all(prefilled) else "empty: no model prediction yet" if prefilled and not any(prefilled)
                else "pre-filled with the current model's prediction on the three slices where one exists")
        lines = [f"FM-ABS round {round_entry['round']} is waiting for an expert: label three slices "
                 f"(one per view) in each of {len(cases)} scan{'s' if len(cases) != 1 else ''}.", "",
                 f"Files to edit ({what}):"]
        allowed = queries.get("allowed_labels") if queries else None
        names = (queries or {}).get("label_names") or {}
        for case in cases:
            scan = (queries or {}).get("scans", {}).get(case)
            lines.append(f"  {scan['file'] if scan else self.label_file(round_entry, case).absolute()}")
            if scan:
                if scan.get("raw_image"):
                    lines.append(f"      image:  {scan['raw_image']}")
                lines.append("      slices: " + ", ".join(
                    f"{p['view']} {p['itk_axis']}={p['index']}" for p in scan["planes"])
                    + "  (voxel index from 0 as in 3D Slicer's IJK; ITK-SNAP counts from 1: "
                    + ", ".join(str(p["index"] + 1) for p in scan["planes"]) + ")")
        label_range = f"0..{max(allowed)}" if allowed else "0..max label"
        lines += [
            "",
            f"Open each image with its file as the segmentation / label map in {', '.join(TOOLS[:-1])} or "
            f"{TOOLS[-1]}, correct the labels on the three listed slices (allowed labels {label_range}, "
            "0 = background), and save the file in place: same path, same name, same format, same "
            "geometry as the image. Only the three listed slices are read; anything drawn elsewhere is "
            "ignored.",
            "  ITK-SNAP:  File > Open Main Image (the image); Segmentation > Open Segmentation (the file); "
            "edit; Segmentation > Save Segmentation Image over the same file.",
            "  3D Slicer: Add Data: the image, and the file with 'Show Options' > LabelMap; edit (Segment "
            "Editor, then export to the label map); save the label map over the same file. Or save the "
            f"segmentation beside it as <scan>{SEG_NRRD} (same folder and name): the newer of the two files is "
            "read; segments named after the dataset's labels"
            + (f" ({', '.join(sorted(names, key=names.get))})" if names else "") + " get those labels.",
            "  napari:    open the image and the file as a Labels layer (with a NIfTI reader plugin); paint; "
            "save the Labels layer to the same file.",
        ]
        if queries is not None:
            lines.append(f"Every scan's slices, views and allowed labels: {folder / QUERIES_FILE}")
        lines += ["", "Then resume training with:", f"  {self.resume_command}",
                  f"(To accept the pre-filled labels unchanged, resume with {ACCEPT_PREFILL_ENV}=1 set.)"]
        return "\n".join(lines)

    # -- paths -------------------------------------------------------------------------------------
    def round_folder(self, round_entry: dict) -> Path:
        return round_folder(self.queries_root, round_entry["round"])

    def label_file(self, round_entry: dict, case: str) -> Path:
        """The file the person edits for ``case``: ``<queries_root>/round_NN/<case><file_ending>``."""
        return self.round_folder(round_entry) / f"{case}{self.file_ending}"

    def label_files(self, round_entry: dict, case: str) -> tuple[Path, Path]:
        """The two files that may hold the person's labels for ``case``: the label map written for them and a
        3D Slicer segmentation saved beside it (``<case>.seg.nrrd``)."""
        return self.label_file(round_entry, case), self.round_folder(round_entry) / f"{case}{SEG_NRRD}"

    def label_source(self, round_entry: dict, case: str) -> Path | None:
        """The file read for ``case``: the newer of :meth:`label_files` that exist (None if neither does)."""
        present = [p for p in self.label_files(round_entry, case) if p.is_file()]
        return max(present, key=lambda p: p.stat().st_mtime_ns) if present else None

    # -- internals ---------------------------------------------------------------------------------
    def _prediction(self, case: str, access: ScanAccess, shape: Sequence[int]) -> np.ndarray | None:
        """The model's label array for ``case``, or None. Kept from propose_slices until the round's files
        are written, so that one sliding-window prediction serves both."""
        if case not in self._predictions:
            pred = access.prediction(case)
            if pred is not None:
                pred = np.asarray(pred)
                if pred.ndim == 4 and pred.shape[0] == 1:
                    pred = pred[0]
                if pred.shape != tuple(shape):
                    raise ValueError(f"{case}: the prediction has shape {pred.shape}, the preprocessed scan "
                                     f"{tuple(shape)}")
                pred = np.clip(pred, 0, None)
            self._predictions[case] = pred
        return self._predictions[case]

    @staticmethod
    def _case_geometry(case: str, access: ScanAccess) -> tuple[CaseGeometry, RawGeometry, Path | None]:
        """Preprocessed <-> raw mapping, and the raw image's geometry (its header; else nnU-Net's copy)."""
        props = access.properties(case)
        if "sitk_stuff" not in props:
            raise HumanAnnotationError(
                f"{case}: nnU-Net's properties have no 'sitk_stuff'; the human expert needs a dataset read "
                "with nnU-Net's SimpleITKIO (other readers reorient the arrays)")
        geom = CaseGeometry.from_properties(props, access.transpose_forward, access.shape(case))
        sitk_stuff = props["sitk_stuff"]
        expected = RawGeometry(tuple(reversed(geom.raw_shape)), tuple(float(i) for i in sitk_stuff["spacing"]),
                               tuple(float(i) for i in sitk_stuff["origin"]),
                               tuple(float(i) for i in sitk_stuff["direction"]))
        raw = access.raw_image(case)
        if raw is None:
            return geom, expected, None
        raw = Path(raw)
        ref = RawGeometry.read(raw)
        if ref.size != expected.size:
            raise HumanAnnotationError(
                f"{raw}: size {ref.size}, but nnU-Net preprocessed {case} from an image of size "
                f"{expected.size}; was the raw image replaced after preprocessing?")
        return geom, ref, raw.absolute()

    def _write_round(self, round_entry: dict, access: ScanAccess, folder: Path) -> None:
        import SimpleITK as sitk

        folder.mkdir(parents=True, exist_ok=True)
        max_label = int(access.max_label)
        dtype = np.uint8 if max_label < 256 else np.uint16
        scans = {}
        backup: Path | None = None
        for case in round_entry["cases"]:
            geom, ref, raw_path = self._case_geometry(case, access)
            slices = [int(i) for i in round_entry["slices"][case]]
            pred = self._prediction(case, access, geom.shape_preprocessed)
            label = np.zeros(geom.raw_shape, dtype=dtype)
            planes = geom.pp_slices_to_raw(slices)
            for a, plane in enumerate(planes):
                if pred is not None:
                    index: list = [slice(None)] * 3
                    index[plane["raw_axis"]] = plane["index"]
                    pp_plane = np.minimum(np.take(pred, slices[a], axis=a), max_label).astype(dtype)
                    label[tuple(index)] = geom.pp_plane_to_raw(pp_plane, a)
            image = sitk.GetImageFromArray(label)
            image.SetSpacing(ref.spacing)
            image.SetOrigin(ref.origin)
            image.SetDirection(ref.direction)
            path = self.label_file(round_entry, case)
            if path.exists():  # left by a process that died before queries.json: keep it, never overwrite
                backup = backup or folder / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                backup.mkdir(exist_ok=True)
                os.replace(path, backup / path.name)
            atomic.write_with(path, lambda tmp: sitk.WriteImage(image, str(tmp), True))
            views = view_names(ref.direction)
            by_itk = sorted(planes, key=lambda p: p["itk_axis"])
            scans[case] = {
                "file": str(path.absolute()),
                "raw_image": str(raw_path) if raw_path else None,
                "sha256": sha256_file(path),
                "planes_sha256": planes_digest([np.take(label, p["index"], axis=p["raw_axis"]) for p in planes]),
                "prefilled_from": "prediction" if pred is not None else "nothing (empty)",
                "slices_ijk": [p["index"] for p in by_itk],
                "views_ijk": list(views),
                "planes": [{"view": views[p["itk_axis"]], "itk_axis": _ITK_AXIS_NAMES[p["itk_axis"]],
                            "index": p["index"], "index_from_1": p["index"] + 1,
                            "preprocessed_axis": p["preprocessed_axis"],
                            "preprocessed_index": p["preprocessed_index"]} for p in by_itk],
                "preprocessed_slices": slices,
            }
        if backup is not None:
            warnings.warn(f"{folder}: files left by an interrupted run were moved to {backup}", AnnotationWarning)
        atomic.write_json(folder / QUERIES_FILE, {
            "format": QUERIES_FORMAT,
            "round": int(round_entry["round"]),
            "cases": list(round_entry["cases"]),
            "file_ending": self.file_ending,
            "allowed_labels": list(range(max_label + 1)),
            "label_names": {str(k): int(v) for k, v in access.label_names.items()},
            "note": ("Edit each file in place; only the three planes listed per scan are read "
                     "(slices_ijk: 0-based voxel index along ITK axes i, j, k, as 3D Slicer's IJK; ITK-SNAP's "
                     "cursor inspector counts from 1 (index_from_1); views_ijk: the view of the plane at that "
                     "index). A 3D Slicer segmentation saved beside a file as <scan>" + SEG_NRRD + " is read instead "
                     "when it is the newer; name its segments after label_names. Resume with: "
                     + self.resume_command),
            "resume_command": self.resume_command,
            "scans": scans,
            "written_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        })
        for case in round_entry["cases"]:
            self._predictions.pop(case, None)

    def _import_round(self, round_entry: dict, access: ScanAccess, folder: Path,
                      require_all_edited: bool = False) -> dict[str, CrossAnnotation]:
        import SimpleITK as sitk

        queries_path = folder / QUERIES_FILE
        queries = _load_queries(folder)
        if queries is None:
            raise HumanAnnotationError(f"{queries_path} is not readable JSON")
        cases = list(round_entry["cases"])
        if int(queries.get("round", -1)) != int(round_entry["round"]) or list(queries.get("cases", [])) != cases:
            raise HumanAnnotationError(
                f"{queries_path} is for round {queries.get('round')} with scans {queries.get('cases')}, but the "
                f"pending round {round_entry['round']} asks for {cases}: the folder belongs to another run. "
                f"Move {folder} away to have the files written afresh.")
        incomplete = [c for c in cases if c not in queries.get("scans", {})]
        if incomplete:
            raise HumanAnnotationError(f"{queries_path} has no entry for {incomplete}; move {folder} away to have "
                                       "the files written afresh")
        stale = [c for c in cases if [int(i) for i in queries["scans"][c]["preprocessed_slices"]]
                 != [int(i) for i in round_entry["slices"][c]]]
        if stale:
            raise HumanAnnotationError(f"{queries_path}: the slices of {stale} differ from the pending round's; "
                                       f"move {folder} away to have the files written afresh")
        paths = {c: self.label_source(round_entry, c) or self.label_file(round_entry, c) for c in cases}
        missing = [c for c in cases if not paths[c].is_file()]
        if missing:
            raise HumanAnnotationError(
                f"round {round_entry['round']}: {len(missing)} of {len(cases)} label files are missing "
                f"(scans {missing}):\n" + "\n".join(f"  {paths[c]}" for c in missing)
                + f"\nSave each edited file at exactly this path (or, from 3D Slicer, as <scan>{SEG_NRRD} beside "
                  "it), then resume.")
        max_label = int(access.max_label)
        dtype = np.uint8 if max_label < 256 else np.uint16
        errors: list[str] = []
        outside: list[str] = []
        unedited: list[str] = []
        annotations: dict[str, CrossAnnotation] = {}
        for case in cases:
            path = paths[case]
            geom, ref, raw_path = self._case_geometry(case, access)
            if path.name.endswith(SEG_NRRD) and path != self.label_file(round_entry, case):
                try:
                    volume = read_seg_nrrd(path, ref.size, ref.spacing, ref.origin, ref.direction,
                                           access.label_names, max_label)
                except SlicerSegmentationError as e:
                    errors.append(str(e))
                    continue
                self.log(f"round {round_entry['round']}: {case}: read the 3D Slicer segmentation {path}")
            else:
                try:
                    image = sitk.ReadImage(str(path))
                except RuntimeError as e:
                    errors.append(f"{path}: cannot be read as an image ({str(e).strip().splitlines()[-1]})")
                    continue
                if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
                    errors.append(f"{path}: a {image.GetDimension()}D image with "
                                  f"{image.GetNumberOfComponentsPerPixel()} components per voxel; expected a 3D "
                                  "label map with one value per voxel")
                    continue
                diffs = RawGeometry.of_image(image).differences(ref)
                if diffs:
                    errors.append(f"{path}: geometry differs from the raw image "
                                  f"{raw_path or '(as nnU-Net recorded it)'}: " + "; ".join(diffs))
                    continue
                volume = sitk.GetArrayViewFromImage(image)  # (z, y, x), like nnU-Net's raw arrays
            slices = [int(i) for i in round_entry["slices"][case]]
            raw_planes, mask = [], np.zeros(volume.shape, dtype=bool)
            for a in range(3):
                n, r = geom.raw_axis(a), geom.pp_to_raw(a, slices[a])
                raw_planes.append(np.take(volume, r, axis=n))
                index: list = [slice(None)] * 3
                index[n] = r
                mask[tuple(index)] = True
            values = np.unique(np.concatenate([p.ravel() for p in raw_planes]))
            allowed = (values >= 0) & (values <= max_label)
            if values.dtype.kind == "f":
                allowed &= np.isfinite(values) & (values == np.round(values))
            bad = values[~allowed]
            if bad.size:
                shown = ", ".join(f"{v:g}" for v in bad[:10]) + (f" and {bad.size - 10} more" if bad.size > 10 else "")
                errors.append(f"{path}: label values {shown} on the three slices are not allowed; "
                              f"allowed are the integers 0..{max_label}")
                continue
            if np.count_nonzero(volume) > np.count_nonzero(volume[mask]):
                outside.append(str(path))
            scan = queries["scans"][case]
            if sha256_file(path) == scan["sha256"] or planes_digest(raw_planes) == scan.get("planes_sha256"):
                unedited.append(case)
            planes = tuple(geom.raw_plane_to_pp(raw_planes[a], a).astype(dtype) for a in range(3))
            annotations[case] = CrossAnnotation(tuple(slices), planes)  # type: ignore[arg-type]
        if errors:
            raise HumanAnnotationError(f"round {round_entry['round']}: cannot import the labels:\n  "
                                       + "\n  ".join(errors) + "\nFix the files in place, then resume.")
        accept_prefill = os.environ.get(ACCEPT_PREFILL_ENV, "").strip().lower() in ("1", "true", "yes")
        if len(unedited) == len(cases) and not accept_prefill:
            raise HumanAnnotationError(
                f"round {round_entry['round']}: nothing was edited; the three slices of every file still hold "
                "the labels pre-filled for you:\n" + "\n".join(f"  {paths[c]}" for c in cases)
                + f"\nCorrect the three slices and save in place, or set {ACCEPT_PREFILL_ENV}=1 to accept the "
                  "model's pre-filled labels as they are.")
        if require_all_edited and unedited and not accept_prefill:
            raise HumanAnnotationError(
                f"round {round_entry['round']}: {len(unedited)} of {len(cases)} files not edited yet:\n"
                + "\n".join(f"  {paths[c]}" for c in unedited))
        if outside:
            warnings.warn("labels outside the three queried slices are ignored (only the three slices are "
                          "read) in:\n  " + "\n  ".join(outside), AnnotationWarning)
        if unedited:
            warnings.warn(f"accepted the pre-filled labels unchanged for {unedited}", AnnotationWarning)
        return annotations


def _load_queries(folder: Path) -> dict | None:
    import json

    path = folder / QUERIES_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
