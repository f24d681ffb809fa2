"""Boxes bounded by the expert's planes (nnunet_fmabs.pseudolabels.expert_bounds), hand-computed."""
import numpy as np
import pytest

from nnunet_fmabs.annotation.pool import CrossAnnotation
from nnunet_fmabs.pseudolabels.expert_bounds import BoundedPrompts, ExpertExtent, bounded_box
from nnunet_fmabs.pseudolabels.prompts import DEFAULT_RECIPE, PromptRecipe, teacher_prompts

SHAPE = (10, 12, 14)


@pytest.fixture
def extent():
    dense = np.zeros(SHAPE, np.uint8)
    dense[2:7, 3:9, 4:11] = 1  # the object: axis 0 2..6, axis 1 3..8, axis 2 4..10
    return dense, ExpertExtent.from_cross(CrossAnnotation.from_dense(dense, (4, 5, 7)))


def test_extent_along_each_axis_and_on_slices(extent):
    _, ext = extent
    assert ext.along(0) == (2, 6) and ext.along(1) == (3, 8) and ext.along(2) == (4, 10)
    # slice 3 of view 0: rows are axis 1 (from the plane across axis 2), columns axis 2 (plane across axis 1)
    assert ext.segments(0, 3) == ((3, 8), (4, 10))
    assert ext.segments(0, 1) == (None, None)  # beyond the object
    # slice 5 of view 2: rows axis 0, columns axis 1
    assert ext.segments(2, 5) == ((2, 6), (3, 8))


def test_bounded_box_clips_stretches_and_fills_in():
    rows, cols, shape = (3, 8), (4, 10), (12, 14)
    # an over-segmenting teacher's box: clipped to the segments +- 1 px
    assert bounded_box((1, 0, 13, 11), rows, cols, (1, 1), shape) == (3, 2, 11, 9)
    # an under-segmenting one: stretched to cover the segments
    assert bounded_box((6, 5, 7, 6), rows, cols, (1, 1), shape) == (4, 3, 10, 8)
    # the teacher missed the slice: the segments' box where both are known, else no prompt
    assert bounded_box(None, rows, cols, (1, 1), shape) == (4, 3, 10, 8)
    assert bounded_box(None, rows, None, (1, 1), shape) is None
    # only one segment known: the other side keeps the teacher's box
    assert bounded_box((1, 0, 13, 11), None, cols, (2, 2), shape) == (2, 0, 12, 11)


def test_candidates_within_the_margin_of_the_object(extent):
    _, ext = extent
    bounded = BoundedPrompts(ext, margin_mm=1.0, spacing=(1.0, 1.0, 1.0))
    assert bounded.candidates(0, np.arange(10), 10).tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert bounded.candidates(0, np.array([], np.int64), 10).tolist() == [2, 3, 4, 5, 6]
    # 2 mm of margin on a 2-mm axis: one slice
    assert BoundedPrompts(ext, 2.0, (2.0, 1.0, 1.0)).candidates(0, np.arange(10), 10).tolist() == list(range(1, 8))


def test_teacher_prompts_bounded_on_a_teacher_with_a_vein(extent):
    dense, ext = extent
    teacher = dense.astype(bool).copy()
    teacher[:, 5:7, 6:8] = True  # a "vein" along axis 0 through the whole volume, touching the object
    teacher[4, 3:9, 0:14] = True  # and a leak along axis 2 on slice 4
    recipe = DEFAULT_RECIPE.with_(box_growth_mm=0.0, expert_bounds_mm=1.0)
    rng = np.random.default_rng(0)
    views = teacher_prompts(teacher, rng, recipe, extent=ext)
    view0 = dict(views[0])
    assert sorted(view0) == [1, 2, 3, 4, 5, 6, 7]  # the vein's slices 0, 8, 9 are dropped
    assert view0[4].box == (3, 3, 11, 8)  # the leak to columns 0..13 clipped to 4..10 +- 1
    assert view0[1].box == (6, 5, 7, 6)  # beyond the object (no segments): the teacher's box
    unbounded = dict(teacher_prompts(teacher, np.random.default_rng(0), recipe.with_(expert_bounds_mm=None))[0])
    assert sorted(unbounded) == list(range(10)) and unbounded[4].box == (0, 3, 13, 8)
    # without an extent (an unlabeled scan) the recipe's bounds do nothing
    same = dict(teacher_prompts(teacher, np.random.default_rng(0), recipe)[0])
    assert {i: p.box for i, p in same.items()} == {i: p.box for i, p in unbounded.items()}


def test_recipe_refuses_a_bad_margin():
    with pytest.raises(ValueError, match="expert_bounds_mm"):
        PromptRecipe(expert_bounds_mm=-1.0)
    assert "expert's planes +- 2.5 mm" in DEFAULT_RECIPE.with_(expert_bounds_mm=2.5,
                                                             expert_prompt_growth_mm=None).describe()
    with pytest.raises(ValueError, match="expert_prompt_growth_mm"):
        PromptRecipe(expert_prompt_growth_mm=float("inf"))
    assert "expert's planes alone (boxes of their segments grown 0-10 mm" in DEFAULT_RECIPE.with_(
        expert_prompt_growth_mm=10.0).describe()


def test_setting_reaches_the_recipe_and_is_refused_off_the_grid():
    from nnunet_fmabs.settings import RunSettings

    assert RunSettings.from_environ({}).recipe().expert_bounds_mm == 5.0  # the default recipe's
    assert RunSettings.from_environ({"FMABS_EXPERT_BOUNDS_MM": "off"}).recipe().expert_bounds_mm is None
    raw = RunSettings.from_environ({"FMABS_PROMPT_RESOLUTION": "raw"}).recipe()
    assert raw.expert_bounds_mm is None and raw.expert_prompt_growth_mm is None
    assert "FMABS_EXPERT_PROMPT_GROWTH_MM" in str(pytest.raises(ValueError, RunSettings.from_environ, {
        "FMABS_EXPERT_PROMPT_GROWTH_MM": "10", "FMABS_PROMPT_RESOLUTION": "raw"}).value)
    bounded = RunSettings.from_environ({"FMABS_EXPERT_BOUNDS_MM": "2.5"}).recipe()
    assert (bounded.expert_bounds_mm, bounded.name) == (2.5, "custom")
    with pytest.raises(ValueError, match="FMABS_EXPERT_BOUNDS_MM='-1'"):
        RunSettings.from_environ({"FMABS_EXPERT_BOUNDS_MM": "-1"})
    with pytest.raises(ValueError, match="needs FMABS_PROMPT_RESOLUTION=grid"):
        RunSettings.from_environ({"FMABS_EXPERT_BOUNDS_MM": "2.5", "FMABS_PROMPT_RESOLUTION": "raw"})


def test_planes_alone_setting_reaches_the_recipe_and_is_refused_off_the_grid():
    from nnunet_fmabs.settings import RunSettings

    assert RunSettings.from_environ({}).recipe().expert_prompt_growth_mm is None  # off in the default recipe
    assert RunSettings.from_environ({"FMABS_EXPERT_PROMPT_GROWTH_MM": "off"}).recipe().expert_prompt_growth_mm is None
    assert RunSettings.from_environ({"FMABS_EXPERT_PROMPT_GROWTH_MM": "5"}).recipe().expert_prompt_growth_mm == 5.0
    assert RunSettings.from_environ({"FMABS_PROMPT_RECIPE": "paper"}).recipe().expert_prompt_growth_mm is None
    with pytest.raises(ValueError, match="FMABS_EXPERT_PROMPT_GROWTH_MM='x'"):
        RunSettings.from_environ({"FMABS_EXPERT_PROMPT_GROWTH_MM": "x"})
    with pytest.raises(ValueError, match="FMABS_EXPERT_PROMPT_GROWTH_MM=5 shapes .* needs FMABS_PROMPT_RESOLUTION=grid"):
        RunSettings.from_environ({"FMABS_EXPERT_PROMPT_GROWTH_MM": "5", "FMABS_PROMPT_RESOLUTION": "auto"})


class _BoxFill:
    """A generalist that fills each box it is given (the recipe's prompts made visible)."""

    def __init__(self):
        self.boxes = []

    def segment(self, slices, boxes, points=None):
        out = []
        for image, (x0, y0, x1, y1) in zip(slices, np.asarray(boxes, int)):
            self.boxes.append((x0, y0, x1, y1))
            m = np.zeros(np.shape(image), bool)
            m[y0:y1 + 1, x0:x1 + 1] = True
            out.append(m)
        return out


def test_label_from_expert_planes_needs_no_teacher(extent):
    """A cuboid: on every slice where two planes cross it, their segments span its section exactly, so with no
    growth each view's boxes fill the cuboid and Y_f is the object; growth only widens the boxes."""
    from nnunet_fmabs.pseudolabels import label_from_expert_planes

    dense, ext = extent
    image = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    generalist = _BoxFill()
    out = label_from_expert_planes(image, ext, generalist, np.random.default_rng(0), spacing=(1.0, 1.0, 1.0),
                                   recipe=DEFAULT_RECIPE.with_(expert_prompt_growth_mm=0.0))
    np.testing.assert_array_equal(out.fused, dense.astype(bool))
    assert out.n_prompted_slices == 5 + 6 + 7  # the object's slices of the three views, no more
    assert (1, 3, 8, 8) not in generalist.boxes and (4, 3, 10, 8) in generalist.boxes  # view 0: cols 4..10, rows 3..8
    grown = label_from_expert_planes(image, ext, _BoxFill(), np.random.default_rng(0), spacing=(1.0, 1.0, 1.0),
                                     recipe=DEFAULT_RECIPE.with_(expert_prompt_growth_mm=2.0))
    assert grown.fused[dense.astype(bool)].all() and grown.fused.sum() > dense.sum()
    # the recipe's limit to the teacher's object does not apply: there is no teacher
    assert DEFAULT_RECIPE.limit_to_teacher_mm is not None and out.fused.any()
