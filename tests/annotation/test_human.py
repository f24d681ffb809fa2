"""The human expert without the trainer: files written for a person, read back into preprocessed space.

Uses the tiny dataset that nnU-Net planned and preprocessed in test_geometry.py (transposed,
cropped, resampled; non-identity direction).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_fmabs import atomic
from nnunet_fmabs.annotation import human as human_module
from nnunet_fmabs.annotation.experts import ScanAccess
from nnunet_fmabs.annotation.geometry import view_names
from nnunet_fmabs.annotation.human import (ACCEPT_PREFILL_ENV, QUERIES_FILE, AnnotationWarning, HumanAnnotationError,
                                           HumanExpert)
from nnunet_fmabs.annotation.pool import LabeledPool
from nnunet_fmabs.annotation.slices import select_slices
from tests.annotation.test_geometry import DIRECTION, LABELS, TinyDataset, get_tiny_dataset

RESUME = "nnUNetv2_train 987 3d_fullres 0 -tr FMABSTrainer_HER_MV -p nnUNetPlans --c"
QUERIED = ["tiny_000", "tiny_002"]  # one case not resampled (exact checks), one resampled up


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyDataset:
    return get_tiny_dataset(tmp_path_factory)


def make_access(tiny: TinyDataset, prediction="rough", raw=True, label_names=None) -> ScanAccess:
    """``prediction``: "rough" (the truth shifted by two voxels), "perfect", "empty" or None."""
    def pred(case):
        if prediction is None:
            return None
        seg = np.clip(tiny.seg(case), 0, None).astype(np.uint8)
        return {"perfect": seg, "rough": np.roll(seg, 2, axis=1), "empty": np.zeros_like(seg)}[prediction]

    return ScanAccess(shape=tiny.shape, properties=tiny.properties, prediction=pred,
                      raw_image=tiny.raw_image if raw else (lambda case: None),
                      transpose_forward=tiny.transpose_forward, max_label=2,
                      label_names=LABELS if label_names is None else label_names)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read(path: Path) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def write_like(path: Path, array: np.ndarray, like: sitk.Image, **override) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(override.get("spacing", like.GetSpacing()))
    image.SetOrigin(override.get("origin", like.GetOrigin()))
    image.SetDirection(override.get("direction", like.GetDirection()))
    sitk.WriteImage(image, str(path), True)


def raw_planes(tiny, case, slices):
    """(raw numpy axis, raw index) of the three queried planes."""
    g = tiny.geometry(case)
    return [(g.raw_axis(a), g.pp_to_raw(a, slices[a])) for a in range(3)]


def on_planes(shape, planes) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for n, r in planes:
        index = [slice(None)] * 3
        index[n] = r
        mask[tuple(index)] = True
    return mask


class Round:
    """A pool with one pending human round whose files were written (the first process)."""

    def __init__(self, tiny, tmp_path, access=None, cases=QUERIED):
        self.tiny = tiny
        self.access = access or make_access(tiny)
        self.pool = LabeledPool.open(tmp_path / "pool", budget=2, training_cases=tiny.cases)
        self.expert = HumanExpert(tmp_path / "queries", RESUME)
        slices = {c: self.expert.propose_slices(c, self.access) for c in cases}
        self.entry = self.pool.add_query(cases, slices, expert="human", sampler="random", iteration=0)
        assert self.expert.answer(self.entry, self.access) is None
        self.folder = tmp_path / "queries" / "round_00"
        self.queries = json.loads((self.folder / QUERIES_FILE).read_text())
        self.pool_json = (tmp_path / "pool" / "pool.json").read_bytes()
        self.pool_file = tmp_path / "pool" / "pool.json"

    def file(self, case) -> Path:
        return self.folder / f"{case}.nii.gz"

    def edit_with_truth(self, case, junk=True) -> np.ndarray:
        """The person's work: the raw ground truth on the three planes (junk elsewhere)."""
        image, _ = read(self.file(case))
        truth = self.tiny.raw_label(case)
        mask = on_planes(truth.shape, raw_planes(self.tiny, case, self.entry["slices"][case]))
        edited = np.where(mask, truth, 0).astype(np.uint8)
        if junk:
            edited[~mask & (np.arange(edited.size).reshape(edited.shape) % 7 == 0)] = 2
        write_like(self.file(case), edited, image)
        return truth

    def assert_nothing_lost(self):
        assert self.pool_file.read_bytes() == self.pool_json
        pool = LabeledPool.open(self.pool_file.parent, 2, self.tiny.cases)
        assert pool.pending_round["round"] == 0 and pool.labeled_cases == []


# -- the whole loop ---------------------------------------------------------------------------------
def test_human_round_trip(tiny, tmp_path):
    access = make_access(tiny)
    pool = LabeledPool.open(tmp_path / "pool", budget=2, training_cases=tiny.cases)
    expert = HumanExpert(tmp_path / "queries", RESUME)
    assert expert.name == "human"
    slices = {c: expert.propose_slices(c, access) for c in QUERIED}
    for c in QUERIED:  # bbox middle of the predicted foreground, in preprocessed space
        assert slices[c] == select_slices(access.prediction(c), rule="bbox_middle")
    entry = pool.add_query(QUERIED, slices, expert="human", sampler="random", iteration=0)

    # first process: files for the person, nothing returned
    assert expert.answer(entry, access) is None
    folder = tmp_path / "queries" / "round_00"
    queries = json.loads((folder / QUERIES_FILE).read_text())
    assert queries["round"] == 0 and queries["cases"] == QUERIED and queries["allowed_labels"] == [0, 1, 2]
    assert queries["resume_command"] == RESUME
    for case in QUERIED:
        path = folder / f"{case}.nii.gz"
        scan = queries["scans"][case]
        assert scan["file"] == str(path.absolute()) and scan["sha256"] == sha(path)
        assert scan["raw_image"] == str(tiny.raw_image(case).absolute())
        image, label = read(path)
        raw = sitk.ReadImage(str(tiny.raw_image(case)))
        assert image.GetSize() == raw.GetSize() and image.GetSpacing() == raw.GetSpacing()
        assert image.GetOrigin() == raw.GetOrigin()
        np.testing.assert_allclose(image.GetDirection(), raw.GetDirection(), atol=1e-6)
        assert label.dtype == np.uint8
        # pre-filled with the model's prediction on the three planes, 0 elsewhere
        g = tiny.geometry(case)
        planes = raw_planes(tiny, case, entry["slices"][case])
        mask = on_planes(label.shape, planes)
        assert not label[~mask].any()
        pred = access.prediction(case)
        for a, (n, r) in enumerate(planes):  # later planes overwrite earlier ones on the intersection lines
            expected = g.pp_plane_to_raw(np.take(pred, entry["slices"][case][a], axis=a), a)
            later = np.take(on_planes(label.shape, planes[a + 1:]), r, axis=n)
            np.testing.assert_array_equal(np.take(label, r, axis=n)[~later], expected[~later])
        assert label.max() >= 1  # the organ is on the proposed slices
        # slice indices as a viewer shows them: ITK index (i, j, k) with the view of each axis
        by_itk = {2 - n: r for n, r in planes}
        assert scan["slices_ijk"] == [by_itk[0], by_itk[1], by_itk[2]]
        assert scan["views_ijk"] == list(view_names(DIRECTION)) == ["axial", "sagittal", "coronal"]
        assert [p["itk_axis"] for p in scan["planes"]] == ["i", "j", "k"]
        assert scan["preprocessed_slices"] == list(entry["slices"][case])

    message = expert.waiting_message(entry)
    for case in QUERIED:
        assert str(folder / f"{case}.nii.gz") in message
    for needle in ("ITK-SNAP", "3D Slicer", "napari", "in place", "Only the three listed slices are read", RESUME,
                   ACCEPT_PREFILL_ENV, "0..2", str(folder / QUERIES_FILE)):
        assert needle in message

    # the person labels the three slices (and scribbles elsewhere); a later process imports them
    truths = {}
    for case in QUERIED:
        image, _ = read(folder / f"{case}.nii.gz")
        truth = tiny.raw_label(case)
        mask = on_planes(truth.shape, raw_planes(tiny, case, entry["slices"][case]))
        edited = np.where(mask, truth, 0).astype(np.uint8)
        edited[0, 0, 0] = 1  # outside the three planes: ignored
        assert not mask[0, 0, 0]
        write_like(folder / f"{case}.nii.gz", edited, image)
        truths[case] = truth
    hashes = {c: sha(folder / f"{c}.nii.gz") for c in QUERIED}
    expert2 = HumanExpert(tmp_path / "queries", RESUME)  # a fresh process
    with pytest.warns(AnnotationWarning, match="outside the three queried slices"):
        answers = expert2.answer(entry, access)
    assert sorted(answers) == sorted(QUERIED)
    for case in QUERIED:
        ann, g = answers[case], tiny.geometry(case)
        assert ann.slices == tuple(entry["slices"][case])
        for a in range(3):
            raw_plane = np.take(truths[case], g.pp_to_raw(a, ann.slices[a]), axis=g.raw_axis(a))
            np.testing.assert_array_equal(ann.planes[a], g.raw_plane_to_pp(raw_plane, a))
            assert ann.planes[a].dtype == np.uint8
            if case == "tiny_000":  # not resampled: exactly nnU-Net's own preprocessed seg on these planes
                np.testing.assert_array_equal(ann.planes[a],
                                              np.clip(np.take(tiny.seg(case), ann.slices[a], axis=a), 0, None))
    assert {c: sha(folder / f"{c}.nii.gz") for c in QUERIED} == hashes  # the import changed no file

    # the lead's code stores them
    pool.answer(answers, {c: access.shape(c) for c in QUERIED})
    reopened = LabeledPool.open(tmp_path / "pool", budget=2, training_cases=tiny.cases)
    assert reopened.labeled_cases == sorted(QUERIED) and reopened.rounds[0]["status"] == "answered"
    for case in QUERIED:
        for a in range(3):
            np.testing.assert_array_equal(reopened.annotation(case).planes[a], answers[case].planes[a])


def test_propose_slices_without_prediction_is_the_centre(tiny):
    expert = HumanExpert("unused", RESUME)
    shape = tiny.shape("tiny_001")
    centre = tuple(n // 2 for n in shape)
    assert expert.propose_slices("tiny_001", make_access(tiny, prediction=None)) == centre
    assert HumanExpert("unused", RESUME).propose_slices("tiny_001", make_access(tiny, prediction="empty")) == centre


def test_prediction_of_the_wrong_shape_is_refused(tiny):
    access = make_access(tiny)
    access.prediction = lambda case: np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match=r"tiny_001: the prediction has shape \(3, 3, 3\)"):
        HumanExpert("unused", RESUME).propose_slices("tiny_001", access)


def test_without_prediction_or_raw_image(tiny, tmp_path):
    """No model yet (round 0) and nnUNet_raw unset: empty files in the geometry nnU-Net recorded."""
    r = Round(tiny, tmp_path, access=make_access(tiny, prediction=None, raw=False))
    for case in QUERIED:
        image, label = read(r.file(case))
        raw = sitk.ReadImage(str(tiny.raw_image(case)))
        assert image.GetSize() == raw.GetSize()
        np.testing.assert_allclose(image.GetSpacing(), raw.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), raw.GetOrigin(), rtol=1e-6)
        assert not label.any()
        assert r.queries["scans"][case]["raw_image"] is None
        g = tiny.geometry(case)
        centre = [n // 2 for n in g.shape_preprocessed]
        assert r.entry["slices"][case] == centre
        by_itk = {g.itk_axis(a): g.pp_to_raw(a, centre[a]) for a in range(3)}
        assert r.queries["scans"][case]["slices_ijk"] == [by_itk[0], by_itk[1], by_itk[2]]
    assert "image:" not in r.expert.waiting_message(r.entry)


# -- bad input: a clear error naming the file, nothing lost ----------------------------------------
def test_untouched_files_are_refused_then_accepted_on_request(tiny, tmp_path, monkeypatch):
    r = Round(tiny, tmp_path)
    monkeypatch.delenv(ACCEPT_PREFILL_ENV, raising=False)
    with pytest.raises(HumanAnnotationError, match="nothing was edited") as e:
        r.expert.answer(r.entry, r.access)
    for case in QUERIED:
        assert str(r.file(case)) in str(e.value)
    assert ACCEPT_PREFILL_ENV in str(e.value)
    r.assert_nothing_lost()
    # opened and saved again by a viewer (other voxel type, other bytes), slices untouched: still not edited
    for case in QUERIED:
        image, label = read(r.file(case))
        write_like(r.file(case), label.astype(np.int16), image)
        assert sha(r.file(case)) != r.queries["scans"][case]["sha256"]
    with pytest.raises(HumanAnnotationError, match="nothing was edited"):
        r.expert.answer(r.entry, r.access)
    r.assert_nothing_lost()
    monkeypatch.setenv(ACCEPT_PREFILL_ENV, "1")
    with pytest.warns(AnnotationWarning, match="accepted the pre-filled labels unchanged"):
        answers = r.expert.answer(r.entry, r.access)
    pred = r.access.prediction("tiny_000")  # not resampled: the prediction's own planes come back
    for a in range(3):
        np.testing.assert_array_equal(answers["tiny_000"].planes[a],
                                      np.take(pred, r.entry["slices"]["tiny_000"][a], axis=a))


def test_one_file_edited_is_enough(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv(ACCEPT_PREFILL_ENV, raising=False)
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_002")
    with pytest.warns(AnnotationWarning) as record:
        answers = r.expert.answer(r.entry, r.access)
    assert sorted(answers) == QUERIED
    messages = [str(w.message) for w in record]
    assert "accepted the pre-filled labels unchanged for ['tiny_000']" in messages
    assert any("outside the three queried slices" in m and "tiny_002.nii.gz" in m for m in messages)


@pytest.mark.parametrize("what", ["size", "spacing", "origin", "direction"])
def test_wrong_geometry_is_refused(tiny, tmp_path, what):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000")
    path = r.file("tiny_002")
    image, label = read(path)
    if what == "size":
        write_like(path, label[:, :-1, :], image)
    elif what == "spacing":
        write_like(path, label, image, spacing=(3.0, 1.2, 1.3))
    elif what == "origin":
        write_like(path, label, image, origin=(0.0, 0.0, 0.0))
    else:
        write_like(path, label, image, direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    before = sha(path)
    with pytest.raises(HumanAnnotationError, match="geometry differs") as e:
        r.expert.answer(r.entry, r.access)
    msg = str(e.value)
    assert str(path) in msg and f"{what} " in msg and str(tiny.raw_image("tiny_002").absolute()) in msg
    assert "tiny_000.nii.gz" not in msg  # the good file is not blamed
    assert sha(path) == before
    r.assert_nothing_lost()


def test_tiny_geometry_differences_are_tolerated(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000", junk=False)
    path = r.file("tiny_002")
    image, label = read(path)
    write_like(path, label, image, spacing=tuple(s * (1 + 2e-5) for s in image.GetSpacing()),
               origin=tuple(o + 1e-5 for o in image.GetOrigin()))
    with pytest.warns(AnnotationWarning, match=r"unchanged for \['tiny_002'\]"):  # same labels, new header
        assert sorted(r.expert.answer(r.entry, r.access)) == QUERIED


def test_labels_above_the_highest_label_are_refused(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000")
    path = r.file("tiny_002")
    image, label = read(path)
    n, idx = raw_planes(tiny, "tiny_002", r.entry["slices"]["tiny_002"])[0]
    index = [slice(None)] * 3
    index[n] = idx
    label[tuple(index)][:2, :2] = 5
    write_like(path, label, image)
    with pytest.raises(HumanAnnotationError, match=r"label values 5 .*allowed are the integers 0\.\.2") as e:
        r.expert.answer(r.entry, r.access)
    assert str(path) in str(e.value)
    r.assert_nothing_lost()


def test_non_integer_and_negative_labels_are_refused(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000")
    path = r.file("tiny_002")
    image, label = read(path)
    values = label.astype(np.float32)
    n, idx = raw_planes(tiny, "tiny_002", r.entry["slices"]["tiny_002"])[1]
    index = [slice(None)] * 3
    index[n] = idx
    values[tuple(index)][0, 0] = 0.5
    values[tuple(index)][0, 1] = -1
    write_like(path, values, image)
    with pytest.raises(HumanAnnotationError, match=r"label values -1, 0\.5 on the three slices") as e:
        r.expert.answer(r.entry, r.access)
    assert str(path) in str(e.value)
    r.assert_nothing_lost()


def test_bad_labels_outside_the_slices_are_only_ignored(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000", junk=False)
    path = r.file("tiny_002")
    image, label = read(path)
    mask = on_planes(label.shape, raw_planes(tiny, "tiny_002", r.entry["slices"]["tiny_002"]))
    label[~mask] = 9
    write_like(path, label, image)
    with pytest.warns(AnnotationWarning) as record:
        answers = r.expert.answer(r.entry, r.access)
    assert all(p.max() <= 2 for p in answers["tiny_002"].planes)
    messages = [str(w.message) for w in record]
    assert any("outside the three queried slices" in m and str(path) in m for m in messages)
    assert "accepted the pre-filled labels unchanged for ['tiny_002']" in messages  # its slices are untouched


def test_missing_files_are_listed(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    for case in QUERIED:
        r.file(case).unlink()
    with pytest.raises(HumanAnnotationError, match="2 of 2 label files are missing") as e:
        r.expert.answer(r.entry, r.access)
    for case in QUERIED:
        assert case in str(e.value) and str(r.file(case)) in str(e.value)
    r.assert_nothing_lost()


def test_unreadable_file_is_named(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000")
    r.file("tiny_002").write_bytes(b"not an image")
    with pytest.raises(HumanAnnotationError, match="cannot be read") as e:
        r.expert.answer(r.entry, r.access)
    assert str(r.file("tiny_002")) in str(e.value)
    r.assert_nothing_lost()


def test_queries_of_another_run_are_not_imported(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    other = dict(r.entry, cases=["tiny_001"], slices={"tiny_001": [1, 1, 1]})
    with pytest.raises(HumanAnnotationError, match="belongs to another run"):
        r.expert.answer(other, r.access)
    moved = dict(r.entry, slices={c: [0, 0, 0] for c in QUERIED})
    with pytest.raises(HumanAnnotationError, match="differ from the pending round"):
        r.expert.answer(moved, r.access)


def test_interrupted_write_is_redone_and_keeps_the_old_files(tiny, tmp_path, monkeypatch):
    """Killed after the label files, before queries.json: the next process writes the round again."""
    access = make_access(tiny)
    pool = LabeledPool.open(tmp_path / "pool", budget=2, training_cases=tiny.cases)
    expert = HumanExpert(tmp_path / "queries", RESUME)
    entry = pool.add_query(QUERIED, {c: expert.propose_slices(c, access) for c in QUERIED}, expert="human",
                           sampler="random", iteration=0)

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(atomic, "write_json", die)
    with pytest.raises(KeyboardInterrupt):
        expert.answer(entry, access)
    folder = tmp_path / "queries" / "round_00"
    assert not (folder / QUERIES_FILE).exists() and (folder / "tiny_000.nii.gz").exists()
    monkeypatch.undo()
    with pytest.warns(AnnotationWarning, match="moved to"):
        assert HumanExpert(tmp_path / "queries", RESUME).answer(entry, access) is None
    assert (folder / QUERIES_FILE).is_file()
    assert len(list(folder.glob("replaced-*/tiny_000.nii.gz"))) == 1
    assert not list(folder.glob(".tmp-*"))


def test_round_folder_name():
    assert human_module.round_folder("/q", 3) == Path("/q/round_03")
    assert human_module.round_folder("/q", 12) == Path("/q/round_12")
    with pytest.raises(ValueError, match="dot"):
        HumanExpert("/q", RESUME, file_ending="nii.gz")


def test_waiting_message_before_files_exist(tmp_path):
    msg = HumanExpert(tmp_path, RESUME).waiting_message({"round": 4, "cases": ["a"], "slices": {"a": [1, 2, 3]}})
    assert str(tmp_path / "round_04" / "a.nii.gz") in msg and RESUME in msg


# -- 3D Slicer segmentations (.seg.nrrd) beside the label maps -------------------------------------
def save_from_slicer(r: Round, case: str, names=("Organ", "marker"), margin=1) -> Path:
    """The person's work saved from 3D Slicer's Segment Editor: the truth on the three planes as segments
    named after the dataset's labels, cropped to their extent (as Slicer stores them) plus ``margin``."""
    import slicerio

    image = sitk.ReadImage(str(r.file(case)))
    truth = r.tiny.raw_label(case)
    mask = on_planes(truth.shape, raw_planes(r.tiny, case, r.entry["slices"][case]))
    labeled = np.where(mask, truth, 0).transpose(2, 1, 0)  # (z, y, x) -> Slicer's (i, j, k)
    lo = np.maximum(np.argwhere(labeled).min(0) - margin, 0)
    hi = np.minimum(np.argwhere(labeled).max(0) + 1 + margin, labeled.shape)
    crop = labeled[tuple(slice(a, b) for a, b in zip(lo, hi))]
    m = np.eye(4)
    m[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    m[:3, 3] = np.asarray(image.GetOrigin()) + m[:3, :3] @ lo
    seg = slicerio.create_segmentation(crop.shape, m)
    for value, name in enumerate(names, start=1):
        slicerio.add_segment(seg, crop == value, {"name": name})
    path = r.folder / f"{case}.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    assert seg["voxels"].shape[-3:] != labeled.shape  # cropped
    return path


def test_slicer_segmentation_is_read_like_the_label_map(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    message = r.expert.waiting_message(r.entry)
    assert ".seg.nrrd" in message and "(background, organ, marker)" in message
    assert r.queries["label_names"] == LABELS
    saved = {c: save_from_slicer(r, c) for c in QUERIED}
    logs: list[str] = []
    r.expert.log = logs.append
    answers = r.expert.answer(r.entry, r.access)
    for case in QUERIED:
        assert any(str(saved[case]) in m for m in logs)
        g, truth = tiny.geometry(case), tiny.raw_label(case)
        for a in range(3):
            raw_plane = np.take(truth, g.pp_to_raw(a, r.entry["slices"][case][a]), axis=g.raw_axis(a))
            np.testing.assert_array_equal(answers[case].planes[a], g.raw_plane_to_pp(raw_plane, a))
        assert any(p.any() for p in answers[case].planes)
    # the label map saved after the segmentation is the newer: it is read instead
    time.sleep(0.01)
    image, label = read(r.file("tiny_000"))
    write_like(r.file("tiny_000"), np.zeros_like(label), image)  # the person cleared the slices
    again = HumanExpert(tmp_path / "queries", RESUME).answer(r.entry, r.access)
    assert not any(p.any() for p in again["tiny_000"].planes)
    for a in range(3):
        np.testing.assert_array_equal(again["tiny_002"].planes[a], answers["tiny_002"].planes[a])


def test_slicer_segmentation_with_unknown_segments_is_refused(tiny, tmp_path):
    r = Round(tiny, tmp_path)
    r.edit_with_truth("tiny_000")
    save_from_slicer(r, "tiny_002", names=("organ", "tumour"))
    import slicerio

    seg = slicerio.read_segmentation(str(r.folder / "tiny_002.seg.nrrd"))
    for s in seg["segments"]:
        s["labelValue"] = 5 if s["name"] == "tumour" else s["labelValue"]
    slicerio.write_segmentation(str(r.folder / "tiny_002.seg.nrrd"), seg)
    with pytest.raises(HumanAnnotationError, match=r"tiny_002.seg.nrrd: segment 'tumour' \(label value 5\) matches no "
                                                  r"label .*'organ' \(1\), 'marker' \(2\)") as e:
        r.expert.answer(r.entry, r.access)
    assert "tiny_000" not in str(e.value)
    r.assert_nothing_lost()


# -- FMABS_HUMAN_WAIT=poll: the job waits for the person -------------------------------------------
def test_poll_mode_waits_until_every_file_is_edited_then_imports(tiny, tmp_path):
    import threading

    access = make_access(tiny)
    pool = LabeledPool.open(tmp_path / "pool", budget=2, training_cases=tiny.cases)
    logs: list[str] = []
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) > 4000:
            raise AssertionError("the poll never ended")
        time.sleep(seconds)

    expert = HumanExpert(tmp_path / "queries", RESUME, wait="poll", poll_seconds=0.02, log=logs.append, sleep=sleep)
    assert expert.blocks
    slices = {c: expert.propose_slices(c, access) for c in QUERIED}
    entry = pool.add_query(QUERIED, slices, expert="human", sampler="random", iteration=0)
    folder = tmp_path / "queries" / "round_00"
    truths = {}

    def person():  # a second thread: edits one file, takes a while, then the other
        while not (folder / QUERIES_FILE).is_file():
            time.sleep(0.01)
        for case in QUERIED:
            time.sleep(0.3)
            image, _ = read(folder / f"{case}.nii.gz")
            truth = tiny.raw_label(case)
            mask = on_planes(truth.shape, raw_planes(tiny, case, entry["slices"][case]))
            truths[case] = truth
            write_like(folder / f"{case}.nii.gz", np.where(mask, truth, 0).astype(np.uint8), image)

    worker = threading.Thread(target=person)
    worker.start()
    answers = expert.answer(entry, access)
    worker.join(timeout=30)
    assert sorted(answers) == sorted(QUERIED)
    # the same import as a later process in exit mode would make
    again = HumanExpert(tmp_path / "queries", RESUME).answer(entry, access)
    for case in QUERIED:
        for a in range(3):
            np.testing.assert_array_equal(answers[case].planes[a], again[case].planes[a])
        assert any(p.any() for p in answers[case].planes)
    assert RESUME in logs[0] and "checks them every 0.02 s" in logs[0]
    assert any("nothing was edited" in m for m in logs)
    assert any("1 of 2 files not edited yet" in m and str(folder / f"{QUERIED[1]}.nii.gz") in m for m in logs)
    assert "the expert's labels are in" in logs[-1]
    assert len(polls) >= 10  # it did wait


def test_wait_settings_from_the_environment():
    expert = HumanExpert.from_environ("q", RESUME, environ={"FMABS_HUMAN_WAIT": "poll", "FMABS_HUMAN_POLL_SECONDS": "5"})
    assert expert.blocks and expert.poll_seconds == 5.0
    assert not HumanExpert.from_environ("q", RESUME, environ={}).blocks
    with pytest.raises(ValueError, match="FMABS_HUMAN_WAIT='forever'"):
        HumanExpert.from_environ("q", RESUME, environ={"FMABS_HUMAN_WAIT": "forever"})
    with pytest.raises(ValueError, match="FMABS_HUMAN_POLL_SECONDS='soon'"):
        HumanExpert.from_environ("q", RESUME, environ={"FMABS_HUMAN_POLL_SECONDS": "soon"})
    with pytest.raises(ValueError, match="FMABS_HUMAN_POLL_SECONDS=0"):
        HumanExpert.from_environ("q", RESUME, environ={"FMABS_HUMAN_POLL_SECONDS": "0"})
