"""Issue 12, defects 2-4: box growth in mm, prompts from the teacher's object, points made visible."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_fmabs.pseudolabels.labeler import dice, label_volume
from nnunet_fmabs.pseudolabels.prompts import (DEFAULT_RECIPE, PAPER_RECIPE, PromptRecipe, growth_in_pixels,
                                               slice_object, teacher_object, teacher_prompts)
from nnunet_fmabs.settings import RunSettings


def test_growth_in_pixels_is_physical():
    # the paper's 0-10 px of 0.625 mm = 6.25 mm: 10 px there, 4 px (6.0 mm) at 1.5 mm, never more than asked
    assert PAPER_RECIPE.box_growth_mm == 6.25
    assert growth_in_pixels(6.25, (0.625, 0.625)) == (10, 10)
    assert growth_in_pixels(6.25, (1.5, 1.5)) == (4, 4)
    # (rows mm, columns mm) -> (along x = columns, along y = rows)
    assert growth_in_pixels(3.0, (2.0, 0.5)) == (6, 1)
    assert growth_in_pixels(0.0, (1.0, 1.0)) == (0, 0)
    with pytest.raises(ValueError):
        growth_in_pixels(3.0, (0.0, 1.0))


def test_teacher_prompts_grow_each_view_by_its_own_spacing():
    mask = np.zeros((20, 30, 40), bool)
    mask[8:12, 10:20, 15:25] = True
    recipe = PAPER_RECIPE.with_(box_growth_mm=6.0)
    spacing = (3.0, 1.0, 2.0)  # mm along axes 0, 1, 2
    growth = {0: [], 1: [], 2: []}
    for seed in range(60):
        views = teacher_prompts(mask, np.random.default_rng(seed), recipe, spacing)
        for axis, prompts in enumerate(views):
            rows_cols = [a for a in range(3) if a != axis]
            lo = [15, 15, 10][axis], [10, 8, 8][axis]  # tight box (x0, y0) of the slice: columns, rows
            hi = [24, 24, 19][axis], [19, 11, 11][axis]
            for _, prompt in prompts:
                x0, y0, x1, y1 = prompt.box
                growth[axis].append((lo[0] - x0, lo[1] - y0, x1 - hi[0], y1 - hi[1]))
            assert len(prompts) == mask.any(axis=tuple(rows_cols)).sum()
    # view 0: rows = axis 1 (1 mm), columns = axis 2 (2 mm): <= 3 px along x, <= 6 px along y
    g = np.array(growth[0])
    assert g.min() == 0 and g[:, [0, 2]].max() == 3 and g[:, [1, 3]].max() == 6
    # view 1: rows = axis 0 (3 mm) -> <= 2 px along y; columns = axis 2 (2 mm) -> <= 3 px along x
    g = np.array(growth[1])
    assert g[:, [0, 2]].max() == 3 and g[:, [1, 3]].max() == 2
    # view 2: rows = axis 0 (3 mm), columns = axis 1 (1 mm)
    g = np.array(growth[2])
    assert g[:, [0, 2]].max() == 6 and g[:, [1, 3]].max() == 2


def _object_and_blobs():
    mask = np.zeros((30, 30, 30), bool)
    mask[10:20, 8:18, 12:22] = True  # the object: 1000 voxels
    for corner in ((1, 1, 1), (26, 26, 26), (1, 26, 12), (26, 1, 14), (14, 27, 1), (15, 1, 27)):
        mask[tuple(slice(c, c + 2) for c in corner)] = True  # six 8-voxel stray blobs
    return mask


def test_teacher_object_keeps_the_main_component_only():
    mask = _object_and_blobs()
    obj = teacher_object(mask, 0.1)
    assert obj.sum() == 1000 and obj[10:20, 8:18, 12:22].all()
    assert teacher_object(mask, 0.0).sum() == mask.sum()  # 0: no filter
    # two large components are both the object (>= 10 % of the largest)
    two = np.zeros((10, 10, 30), bool)
    two[2:6, 2:6, 2:8] = True  # 96
    two[2:6, 2:6, 20:22] = True  # 32
    assert teacher_object(two, 0.1).sum() == 128 and teacher_object(two, 0.5).sum() == 96


def test_slice_object_drops_specks_of_the_slice():
    plane = np.zeros((20, 20), bool)
    plane[5:15, 5:15] = True  # 100 px
    plane[0, 19] = True  # a speck: 1 px < 10 % of 100
    plane[17:19, 0:6] = True  # 12 px >= 10: kept
    kept = slice_object(plane, 0.1)
    assert kept.sum() == 112 and not kept[0, 19]


def test_stray_blobs_neither_get_prompts_nor_stretch_the_box():
    mask = _object_and_blobs()
    rng = np.random.default_rng(0)
    exact = PAPER_RECIPE.with_(box_growth_mm=0.0)
    views = teacher_prompts(mask, rng, exact)
    # view 0: only the object's slices 10..19, each with the object's exact box (x: axis 2, y: axis 1)
    assert [i for i, _ in views[0]] == list(range(10, 20))
    assert {p.box for _, p in views[0]} == {(12, 8, 21, 17)}
    assert [i for i, _ in views[2]] == list(range(12, 22))
    # without the filter the blobs' slices are prompted and slice 14 of view 0 spans the blob at y = 27
    unfiltered = teacher_prompts(mask, rng, exact.with_(object_filter=False))
    assert len(unfiltered[0]) > 10
    assert dict(unfiltered[0])[14].box == (1, 8, 21, 28)


class _FillBox:
    """Box stand-in: fills exactly the box it is given."""

    def segment(self, slices, boxes, points=None):
        out = []
        for image, (x0, y0, x1, y1) in zip(slices, np.asarray(boxes, int)):
            m = np.zeros(image.shape, bool)
            m[y0:y1 + 1, x0:x1 + 1] = True
            out.append(m)
        return out


def test_label_volume_keeps_blobs_out_of_y_f():
    """ground truth + 6 blobs as the teacher: the box stand-in fills exactly the boxes it is given."""

    mask = _object_and_blobs()
    gt = teacher_object(mask)
    image = np.random.default_rng(0).normal(size=mask.shape).astype(np.float32)
    recipe = PAPER_RECIPE.with_(box_growth_mm=0.0)
    filtered = label_volume(image, mask, _FillBox(), np.random.default_rng(0), recipe=recipe)
    assert dice(filtered.fused, gt) == 1.0
    unfiltered = label_volume(image, mask, _FillBox(), np.random.default_rng(0),
                              recipe=recipe.with_(object_filter=False))
    assert dice(unfiltered.fused, gt) < 0.9  # the stretched boxes of three views agree outside the object
    # Y_f limited to 1 mm around the teacher's object
    limited = label_volume(image, mask, _FillBox(), np.random.default_rng(0),
                           recipe=recipe.with_(object_filter=False, limit_to_teacher_mm=0.0))
    assert not (limited.fused & ~mask).any()


def test_min_slice_area_skips_specks_of_the_object():
    mask = np.zeros((12, 12, 12), bool)
    mask[3:9, 3:9, 3:9] = True
    mask[9, 5, 5] = True  # a 1-voxel tip on slice 9 of view 0
    views = teacher_prompts(mask, np.random.default_rng(0), PAPER_RECIPE.with_(min_slice_area_mm2=2.0),
                            spacing=(1.0, 1.0, 1.0))
    assert [i for i, _ in views[0]] == list(range(3, 9))
    views = teacher_prompts(mask, np.random.default_rng(0), PAPER_RECIPE, spacing=(1.0, 1.0, 1.0))
    assert [i for i, _ in views[0]] == list(range(3, 10))


def test_points_follow_the_recipe_or_the_generalist():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    rng = np.random.default_rng(0)
    assert all(len(p.points) == 5 for _, p in teacher_prompts(mask, rng, PAPER_RECIPE)[0])
    assert all(len(p.points) == 0 for _, p in teacher_prompts(mask, rng, PAPER_RECIPE.with_(n_points=0))[0])
    auto = PAPER_RECIPE.with_(n_points=None)
    assert all(len(p.points) == 3 for _, p in teacher_prompts(mask, rng, auto, n_points=3)[0])
    assert "points: the generalist's choice" in auto.describe()


def test_recipe_settings_named_and_overridden():
    default = RunSettings.from_environ({})
    assert default.recipe() == DEFAULT_RECIPE
    paper = RunSettings.from_environ({"FMABS_PROMPT_RECIPE": "paper"})
    assert paper.recipe() == PAPER_RECIPE and paper.box_growth_mm == 6.25
    custom = RunSettings.from_environ({"FMABS_PROMPT_RECIPE": "paper", "FMABS_BOX_GROWTH_MM": "2"})
    assert custom.recipe().name == "custom" and custom.recipe().box_growth_mm == 2.0
    assert custom.to_dict()["prompt_recipe"] == "paper"
    limited = RunSettings.from_environ({"FMABS_LIMIT_TO_TEACHER_MM": "4.5"})
    assert limited.recipe().limit_to_teacher_mm == 4.5
    shaped = RunSettings.from_environ({"FMABS_CORE_MM": "1.5", "FMABS_REFINE_STEPS": "1"}).recipe()
    assert (shaped.core_mm, shaped.refine_steps, shaped.name) == (1.5, 1, "custom")
    with pytest.raises(ValueError, match="core_mm"):
        RunSettings.from_environ({"FMABS_CORE_MM": "-2"}).recipe()
    with pytest.raises(ValueError, match="known recipes are default, paper"):
        RunSettings.from_environ({"FMABS_PROMPT_RECIPE": "best"})
    with pytest.raises(ValueError, match="FMABS_N_POINTS='many'"):
        RunSettings.from_environ({"FMABS_N_POINTS": "many"})
    with pytest.raises(ValueError, match="FMABS_LIMIT_TO_TEACHER_MM='-1'"):
        RunSettings.from_environ({"FMABS_LIMIT_TO_TEACHER_MM": "-1"})
    with pytest.raises(ValueError, match="FMABS_PROMPT_RESOLUTION='native': use one of grid, raw, auto"):
        RunSettings.from_environ({"FMABS_PROMPT_RESOLUTION": "native"})
    with pytest.raises(ValueError, match="FMABS_PL_SOURCE='sam': use one of generalist, teacher, ground_truth"):
        RunSettings.from_environ({"FMABS_PL_SOURCE": "sam"})
    assert RunSettings.from_environ({}).pl_source == "generalist"  # the paper's Y_f unless an ablation is asked
    with pytest.raises(ValueError, match="FMABS_PL_GUARD='yes': use one of planes, off"):
        RunSettings.from_environ({"FMABS_PL_GUARD": "yes"})
    # the measured defaults of the pseudo-label path: eq. 3 only while Y_f is not trusted, a round accepted only
    # where Y_f is 0.03 above the teacher on the expert's planes, labeled scans' teacher boxes bounded by the
    # expert's planes +- 5 mm (off where the raw image's slices are prompted); the planes alone prompting them is an
    # option, off
    assert (default.lambda_sam_schedule, default.pl_guard_margin, default.expert_bounds_mm,
            default.expert_prompt_growth_mm) == ("guarded", -0.03, "5", "off")
    assert (DEFAULT_RECIPE.expert_bounds_mm, DEFAULT_RECIPE.expert_prompt_growth_mm) == (5.0, None)
    assert PAPER_RECIPE.expert_bounds_mm is None and PAPER_RECIPE.expert_prompt_growth_mm is None
    assert (paper.expert_bounds_mm, paper.expert_prompt_growth_mm) == ("off", "off")
    assert paper.recipe().expert_bounds_mm is None and paper.recipe().expert_prompt_growth_mm is None
    for resolution in ("raw", "auto"):
        assert RunSettings.from_environ({"FMABS_PROMPT_RESOLUTION": resolution}).recipe() == DEFAULT_RECIPE.with_(
            expert_bounds_mm=None, expert_prompt_growth_mm=None)
    assert RunSettings.from_environ({"FMABS_LAMBDA_SAM_SCHEDULE": "paper"}).lambda_sam_schedule == "paper"
    assert RunSettings.from_environ({"FMABS_LAMBDA_SAM_SCHEDULE": "constant"}).lambda_sam_schedule == "constant"
    with pytest.raises(ValueError, match="FMABS_LAMBDA_SAM_SCHEDULE='flat': use one of paper, constant, guarded"):
        RunSettings.from_environ({"FMABS_LAMBDA_SAM_SCHEDULE": "flat"})
    with pytest.raises(ValueError):
        PromptRecipe(box_growth_mm=-1.0)


class _ThresholdInBox:
    """Deterministic stand-in: foreground where the slice is above the mean inside the box."""

    def segment(self, slices, boxes, points=None):
        out = []
        for image, (x0, y0, x1, y1) in zip(slices, np.asarray(boxes, int)):
            m = np.zeros(image.shape, bool)
            region = image[y0:y1 + 1, x0:x1 + 1]
            m[y0:y1 + 1, x0:x1 + 1] = region > region.mean()
            out.append(m)
        return out


def test_label_volume_fine_prompts_the_fine_slices_at_the_coarse_positions():
    from scipy import ndimage

    from nnunet_fmabs.pseudolabels.labeler import label_volume_fine

    rng = np.random.default_rng(0)
    fine = rng.normal(0, 0.2, (40, 40, 40)).astype(np.float32)
    fine[10:30, 12:28, 5:35] += 2.0
    maps = [np.round(np.arange(16) * 2.5).astype(int)] * 3  # a 2.5x coarser grid, first voxel centres aligned
    coarse_gt = fine[np.ix_(*maps)] > 1.0
    teacher = ndimage.binary_dilation(coarse_gt, iterations=1)
    recipe = PAPER_RECIPE.with_(box_growth_mm=0.0)
    out = label_volume_fine(fine, teacher, _ThresholdInBox(), np.random.default_rng(0), maps,
                            fine_spacing=(1.0, 1.0, 1.0), spacing=(2.5, 2.5, 2.5), recipe=recipe)
    assert out.fused.shape == teacher.shape
    assert dice(out.fused, coarse_gt) > 0.95 > dice(teacher, coarse_gt)
    # one prompted fine slice per coarse slice of the teacher's object, no more
    assert out.n_prompted_slices == sum(int(teacher.any(axis=tuple(b for b in range(3) if b != a)).sum())
                                        for a in range(3))
    # identity maps: the same as prompting the grid itself
    same = label_volume_fine(fine, fine > 1.0, _ThresholdInBox(), np.random.default_rng(0), [np.arange(40)] * 3,
                             fine_spacing=(1.0, 1.0, 1.0), recipe=recipe)
    grid = label_volume(fine, fine > 1.0, _ThresholdInBox(), np.random.default_rng(0), recipe=recipe)
    np.testing.assert_array_equal(same.fused, grid.fused)
    with pytest.raises(ValueError, match="one fine index per coarse index"):
        label_volume_fine(fine, teacher, _ThresholdInBox(), rng, maps[:2], fine_spacing=(1.0, 1.0, 1.0))


def test_object_core_is_the_object_deeper_than_the_depth_in_mm():
    from nnunet_fmabs.pseudolabels.prompts import object_core

    mask = np.zeros((20, 30, 30), bool)
    mask[4:16, 5:25, 5:25] = True  # 12 x 20 x 20 voxels
    # spacing (2, 1, 1) mm: voxel 4 of axis 0 lies 2 mm from the outside voxel 3, voxel 5 4 mm;
    # along axes 1 and 2 voxel 7 lies 3 mm from voxel 4 (not kept), voxel 8 4 mm
    core = object_core(mask, 3.0, (2.0, 1.0, 1.0))
    expected = np.zeros_like(mask)
    expected[5:15, 8:22, 8:22] = True
    np.testing.assert_array_equal(core, expected)
    np.testing.assert_array_equal(object_core(mask, 0.0, (1, 1, 1)), mask)
    # the volume's border is outside: an object touching it is eroded there too
    full = np.ones((10, 10, 10), bool)
    assert object_core(full, 1.5, (1, 1, 1)).sum() == 8 ** 3


def test_boxes_come_from_the_core_and_y_f_stays_bounded_by_the_object():
    mask = np.zeros((24, 24, 24), bool)
    mask[4:20, 4:20, 4:20] = True
    recipe = DEFAULT_RECIPE.with_(box_growth_mm=0.0, core_mm=2.0)
    views = teacher_prompts(mask, np.random.default_rng(0), recipe, (1.0, 1.0, 1.0))
    for prompts in views:
        # the core: voxels more than 2 mm inside, i.e. indices 6..17
        assert [i for i, _ in prompts] == list(range(6, 18))
        assert {p.box for _, p in prompts} == {(6, 6, 17, 17)}
    with pytest.raises(ValueError, match="core_mm"):
        PromptRecipe(core_mm=-1.0)
    assert "without its outer 2 mm" in recipe.describe()


def test_refinement_prompts_the_generalist_again_with_its_own_y_f():
    """A stand-in that answers the box shrunk by one pixel: every pass shrinks the MV cube by 1 voxel."""

    class ShrinkBox:
        def segment(self, slices, boxes, points=None):
            out = []
            for image, (x0, y0, x1, y1) in zip(slices, np.asarray(boxes, int)):
                m = np.zeros(image.shape, bool)
                m[y0 + 1:y1, x0 + 1:x1] = True
                out.append(m)
            return out

    teacher = np.zeros((24, 24, 24), bool)
    teacher[4:20, 4:20, 4:20] = True
    image = np.zeros(teacher.shape, np.float32)
    recipe = DEFAULT_RECIPE.with_(box_growth_mm=0.0)
    for steps, (lo, hi) in ((0, (5, 19)), (1, (6, 18)), (2, (7, 17))):
        out = label_volume(image, teacher, ShrinkBox(), np.random.default_rng(0), spacing=(1, 1, 1),
                           recipe=recipe.with_(refine_steps=steps))
        expected = np.zeros_like(teacher)
        expected[lo:hi, lo:hi, lo:hi] = True
        np.testing.assert_array_equal(out.fused, expected)
    # the second pass prompts the slices of the first pass's Y_f: 3 x 16 + 3 x 14
    assert label_volume(image, teacher, ShrinkBox(), np.random.default_rng(0), spacing=(1, 1, 1),
                        recipe=recipe.with_(refine_steps=1)).n_prompted_slices == 3 * 16 + 3 * 14
    with pytest.raises(ValueError, match="refine_steps"):
        PromptRecipe(refine_steps=-1)


def _cube_without_edges(shape, lo, hi, along=(0, 1, 2)):
    """A cube [lo, hi) minus the voxels of its edges that run along the given axes."""
    cube = np.zeros(shape, bool)
    cube[lo:hi, lo:hi, lo:hi] = True
    grid = np.indices(shape)
    on_face = [(g == lo) | (g == hi - 1) for g in grid]
    for axis in along:  # an edge along `axis` lies on a face of each of the two other axes
        a, b = (x for x in range(3) if x != axis)
        cube &= ~(on_face[a] & on_face[b])
    return cube


def test_smoothing_removes_the_jag_and_specks_of_y_f():
    """Gaussian sigma 1 voxel (1.5 mm at 1.5 mm), kept where >= 0.5. Per axis the discrete kernel has w0 = 0.399
    and sum_{k>=1} w_k = 0.301, so a voxel on a flat face keeps 0.399 + 0.301 = 0.699 and stays, one on an edge
    0.699^2 = 0.489 and goes (corners too); a voxel sticking out of a face has 0.301 + 0.399^3 = 0.364 and goes, a
    dent in a face 0.699 - 0.064 = 0.636 and is filled, a hole inside 1 - 0.064; a lone speck 0.064 goes."""
    from nnunet_fmabs.pseudolabels.labeler import smooth_fused

    cube = np.zeros((30, 30, 30), bool)
    cube[7:23, 7:23, 7:23] = True
    jagged = cube.copy()
    jagged[6, 14, 14] = True  # a bump on the face of axis 0
    jagged[14, 7, 15] = False  # a dent in the face of axis 1
    jagged[15, 15, 15] = False  # a hole
    jagged[2, 2, 2] = True  # a speck
    blob = np.zeros_like(cube)
    blob[24:27, 24:27, 25:28] = True  # a 27-voxel blob: the blur keeps its core, < 0.1 x the object
    recipe = DEFAULT_RECIPE.with_(smooth_mm=1.5)
    expected = _cube_without_edges(cube.shape, 7, 23)
    np.testing.assert_array_equal(smooth_fused(jagged, recipe, (1.5, 1.5, 1.5)), expected)
    # the main-object rule drops the blob that survives the blur; without it the blob's centre stays
    np.testing.assert_array_equal(smooth_fused(jagged | blob, recipe, (1.5, 1.5, 1.5)), expected)
    kept = smooth_fused(jagged | blob, recipe.with_(min_object_fraction=0.0), (1.5, 1.5, 1.5))
    assert kept[25, 25, 26] and (kept & ~expected).sum() < 27
    # sigma is in mm: at 3 x 1 x 1 mm, 1 mm is a third of a voxel along axis 0 (w0 = 0.978), so the
    # edges running along axis 0 (0.699^2) go, the others (0.699 x 0.989) stay
    np.testing.assert_array_equal(smooth_fused(cube, recipe.with_(smooth_mm=1.0), (3.0, 1.0, 1.0)),
                                  _cube_without_edges(cube.shape, 7, 23, along=(0,)))
    # off (the paper's Y_f) and empty masks pass through
    assert smooth_fused(jagged, DEFAULT_RECIPE, (1.5, 1.5, 1.5)) is jagged
    assert not smooth_fused(np.zeros_like(cube), recipe, None).any()


def test_label_volume_smooths_y_f_before_the_limit_and_the_setting_reaches_the_recipe():
    """The fill-box stand-in answers a cube teacher with the cube itself: smoothed, the cube without its edges."""

    teacher = np.zeros((24, 24, 24), bool)
    teacher[4:20, 4:20, 4:20] = True
    image = np.zeros(teacher.shape, np.float32)
    recipe = DEFAULT_RECIPE.with_(box_growth_mm=0.0, smooth_mm=1.0)
    out = label_volume(image, teacher, _FillBox(), np.random.default_rng(0), spacing=(1, 1, 1), recipe=recipe)
    np.testing.assert_array_equal(out.fused, _cube_without_edges(teacher.shape, 4, 20))
    assert out.views[0].sum() == 16 ** 3  # the views are the generalist's answers, unsmoothed
    assert "Y_f smoothed (Gaussian sigma 1 mm, main object)" in recipe.describe()
    assert "smoothed" not in DEFAULT_RECIPE.describe() and DEFAULT_RECIPE.smooth_mm == 0.0
    smoothed = RunSettings.from_environ({"FMABS_SMOOTH_MM": "1.5"})
    assert (smoothed.recipe().smooth_mm, smoothed.recipe().name) == (1.5, "custom")
    with pytest.raises(ValueError, match="smooth_mm"):
        RunSettings.from_environ({"FMABS_SMOOTH_MM": "-1"}).recipe()
    with pytest.raises(ValueError, match="FMABS_SMOOTH_MM='soft'"):
        RunSettings.from_environ({"FMABS_SMOOTH_MM": "soft"})
