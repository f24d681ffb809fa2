"""Run knobs set without writing a class: environment variables prefixed ``FMABS_``.

As nnU-Net's own settings come from ``nnUNet_*`` variables, ours come from ``FMABS_*``. They are
read once when a trainer starts, written into the run folder (``fmabs/settings.json``) and into
every checkpoint; a resume (``--c``) with different values is refused with a message naming both.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nnunet_fmabs import atomic
from nnunet_fmabs.annotation.rounds import K_PER_ROUND, ROUND_SPREAD, WARMUP_FRACTION
from nnunet_fmabs.pseudolabels.prompts import DEFAULT_RECIPE, RECIPES, PromptRecipe
from nnunet_fmabs.schedules import LAMBDA_SAM_SCHEDULES


PL_SOURCES = ("generalist", "teacher", "ground_truth")  # FMABS_PL_SOURCE: the paper's Y_f, then two ablations


def _off_or(value: float | None) -> str:
    return "off" if value is None else f"{value:g}"


class SettingsMismatchError(RuntimeError):
    """A resumed run was started with other FMABS_* values than the run it continues."""


@dataclass(frozen=True)
class RunSettings:
    """Per-run knobs. Defaults follow the paper (section 3) unless a trainer variant overrides them, except the
    pseudo-label path's, which are the measured ones (README.md, "Run settings"): the ``default`` prompt recipe, the
    round guard asking Y_f for a clear gain over the teacher (margin -0.03) and L_sup^SAM's ``guarded`` weight."""

    budget: str = "25%"  # scans to cross-label: a count ("20") or a fraction of the fold ("25%", "0.25")
    k: int = K_PER_ROUND  # scans queried per active round after round 0 (2.3)
    warmup_fraction: float = WARMUP_FRACTION  # round 0: a random 20 % of the budget (2.3)
    al_spread: float = ROUND_SPREAD  # active rounds evenly over this first fraction of training
    expert: str = "auto"  # simulated | human | auto (simulated when the dataset has dense labels)
    slice_rule: str = "bbox_middle"  # the simulated expert's rule for its three slices
    generalist: str = "litemedsam"
    generalist_checkpoint: str = ""
    generalist_dtype: str = "auto"
    generalist_batch_size: int = 0  # 0: the family's measured default for the device
    embedding_cache: str = "run"  # run | off | a folder shared by several runs
    embedding_cache_gb: float = 4.0
    pl_rounds: str = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8"  # pseudo-label rounds, fractions of t_max
    # prompts (2.2): FMABS_PROMPT_RECIPE names a recipe (default | paper) whose values are the defaults of
    # the fields below; each may be overridden on its own (the run then stores recipe "custom")
    prompt_recipe: str = "default"
    box_growth_mm: float = DEFAULT_RECIPE.box_growth_mm  # random growth of each box side, 0..g mm
    object_filter: int = int(DEFAULT_RECIPE.object_filter)  # 1: prompt the teacher's main object only
    min_slice_area_mm2: float = DEFAULT_RECIPE.min_slice_area_mm2  # smaller slices of the object: no prompt
    n_points: str = "auto" if DEFAULT_RECIPE.n_points is None else str(DEFAULT_RECIPE.n_points)
    limit_to_teacher_mm: str = _off_or(DEFAULT_RECIPE.limit_to_teacher_mm)  # off | mm around the teacher's object
    core_mm: float = DEFAULT_RECIPE.core_mm  # boxes around the object without its outer core_mm
    refine_steps: int = DEFAULT_RECIPE.refine_steps  # the generalist prompted again by its own Y_f
    smooth_mm: float = DEFAULT_RECIPE.smooth_mm  # Y_f's surface smoothed (Gaussian sigma in mm, main object); 0: off
    expert_bounds_mm: str = _off_or(DEFAULT_RECIPE.expert_bounds_mm)  # off | on labeled scans, boxes bounded by the
    # object's extent on the expert's planes +- this margin in mm (nnunet_fmabs.pseudolabels.expert_bounds)
    expert_prompt_growth_mm: str = _off_or(DEFAULT_RECIPE.expert_prompt_growth_mm)  # off | labeled scans prompted by
    # the expert's planes alone, boxes grown 0..this mm, from before training on (pseudolabels.labeler)
    prompt_resolution: str = "grid"  # grid: prompt slices of the training grid; raw: where nnU-Net resampled the
    # scan to a coarser grid, prompt the raw image's slices at the same positions (its own in-plane detail);
    # auto: raw where the raw image is there and finer, the grid's slices otherwise
    pl_source: str = "generalist"  # what Y_f is: generalist (2.2); teacher (ablation: the teacher's own mask,
    # self-training, no generalist); ground_truth (ablation: the dense truth, a perfect generalist's bound;
    # simulation only)
    pl_guard: str = "planes"  # planes: a round whose Y_f agrees less with the expert's planes than the teacher is not
    # trained on (nnunet_fmabs.pseudolabels.quality); off: every round is
    pl_guard_margin: float = -0.03  # how far below the teacher (Dice on the expert's planes) Y_f may be; negative:
    # how far above it Y_f must be (the teacher was trained on those planes: its Dice there is optimistic). LA, rounds
    # 0.001-0.020 above it that margin 0 accepted cost 1.1-1.3 Dice against the same runs with them rejected
    lambda_sam_schedule: str = "guarded"  # weight of L_sup^SAM: paper (eq. 3, 0.5 decaying to 0), constant (0.5) or
    # guarded (0.5 while the target is trusted, eq. 3 otherwise: nnunet_fmabs.schedules.lambda_sam)
    epochs: int = 0  # 0: the trainer's default (the paper's 20,000 iterations)
    iterations_per_epoch: int = 0
    val_iterations: int = 0
    seed: int = 12345
    tta: int = 1  # 0: no mirroring in nnU-Net's final validation and in the checkpoint's inference settings

    def __post_init__(self):
        for name in ("expert_bounds_mm", "expert_prompt_growth_mm"):
            if getattr(self, name) != "off" and self.prompt_resolution != "grid":
                raise ValueError(f"{env_name(name)}={getattr(self, name)} shapes the prompts of the training grid's "
                                 f"slices: it needs {env_name('prompt_resolution')}=grid, not "
                                 f"{self.prompt_resolution!r}")

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None, **defaults: Any) -> "RunSettings":
        """Read ``FMABS_<FIELD>`` variables; ``defaults`` come from the trainer class."""
        environ = os.environ if environ is None else environ
        recipe = _recipe_defaults(environ.get(env_name("prompt_recipe")) or defaults.get("prompt_recipe") or "default")
        if (environ.get(env_name("prompt_resolution")) or defaults.get("prompt_resolution", "grid")) != "grid":
            # the recipe's expert-plane prompts apply to the training grid's slices only
            recipe["expert_bounds_mm"] = recipe["expert_prompt_growth_mm"] = "off"
        defaults = {**recipe, **defaults}
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None or raw == "":
                if f.name in defaults:
                    values[f.name] = defaults[f.name]
                continue
            values[f.name] = _parse(f, raw)
        return cls(**values)

    def recipe(self) -> PromptRecipe:
        """The prompt recipe these settings describe (named after FMABS_PROMPT_RECIPE unless a field
        was overridden, then "custom")."""
        base = RECIPES[self.prompt_recipe]
        n_points = None if self.n_points == "auto" else int(self.n_points)
        limit, bounds, planes_alone = (None if v == "off" else float(v) for v in (
            self.limit_to_teacher_mm, self.expert_bounds_mm, self.expert_prompt_growth_mm))
        recipe = base.with_(name=base.name, box_growth_mm=float(self.box_growth_mm),
                            object_filter=bool(self.object_filter), min_slice_area_mm2=float(self.min_slice_area_mm2),
                            n_points=n_points, limit_to_teacher_mm=limit, core_mm=float(self.core_mm),
                            refine_steps=int(self.refine_steps), smooth_mm=float(self.smooth_mm),
                            expert_bounds_mm=bounds, expert_prompt_growth_mm=planes_alone)
        return recipe if recipe == base else recipe.with_()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_same(self, stored: dict[str, Any], where: str) -> None:
        """Refuse a resume whose knobs differ from those stored with the run."""
        mine = self.to_dict()
        diffs = [
            f"{env_name(k)}: run has {stored[k]!r}, now {mine[k]!r}"
            for k in mine
            if k in stored and stored[k] != mine[k]
        ]
        if diffs:
            raise SettingsMismatchError(
                f"Refusing to continue the run in {where} with other FMABS_* settings than it was "
                "started with:\n  " + "\n  ".join(diffs)
                + "\nSet the variables back to the run's values (or unset them), or start a new run."
            )

    def save(self, path: Path) -> None:
        atomic.write_json(path, self.to_dict())

    @staticmethod
    def load_dict(path: Path) -> dict[str, Any]:
        return json.loads(Path(path).read_text())


def _recipe_defaults(name: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise ValueError(f"{env_name('prompt_recipe')}={name!r}: known recipes are {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    return {"prompt_recipe": name, "box_growth_mm": recipe.box_growth_mm, "object_filter": int(recipe.object_filter),
            "min_slice_area_mm2": recipe.min_slice_area_mm2,
            "n_points": "auto" if recipe.n_points is None else str(recipe.n_points),
            "limit_to_teacher_mm": _off_or(recipe.limit_to_teacher_mm), "core_mm": recipe.core_mm,
            "refine_steps": recipe.refine_steps, "smooth_mm": recipe.smooth_mm,
            "expert_bounds_mm": _off_or(recipe.expert_bounds_mm),
            "expert_prompt_growth_mm": _off_or(recipe.expert_prompt_growth_mm)}


def env_name(field_name: str) -> str:
    return "FMABS_" + field_name.upper()


def _parse(f: dataclasses.Field, raw: str) -> Any:
    typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}[str(f.type)]
    choices = {"prompt_resolution": ("grid", "raw", "auto"), "pl_guard": ("planes", "off"),
               "pl_source": PL_SOURCES, "lambda_sam_schedule": LAMBDA_SAM_SCHEDULES}.get(f.name)
    if choices and raw not in choices:
        raise ValueError(f"{env_name(f.name)}={raw!r}: use one of {', '.join(choices)}")
    if f.name in ("limit_to_teacher_mm", "expert_bounds_mm", "expert_prompt_growth_mm") and raw != "off":
        try:
            if not 0 <= float(raw) < float("inf"):
                raise ValueError
        except ValueError:
            raise ValueError(f"{env_name(f.name)}={raw!r}: use 'off' or a distance in mm >= 0") from None
    if f.name == "n_points" and raw != "auto":
        try:
            if int(raw) < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{env_name(f.name)}={raw!r}: use 'auto' or a whole number >= 0") from None
    try:
        return typ(raw)
    except ValueError:
        raise ValueError(f"{env_name(f.name)}={raw!r} is not a valid {typ.__name__}") from None
