"""The labeled pool: persistence, atomicity (a kill at any moment leaves the old or the new state), bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nnunet_fmabs import atomic
from nnunet_fmabs.annotation.pool import CrossAnnotation, LabeledPool, PoolError

CASES = [f"case_{i:03d}" for i in range(6)]
SHAPE = (6, 7, 8)


def dense(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, SHAPE).astype(np.uint8)


def annotations(cases, slices=(1, 2, 3)) -> dict[str, CrossAnnotation]:
    return {c: CrossAnnotation.from_dense(dense(i), slices) for i, c in enumerate(cases)}


def shapes(cases) -> dict[str, tuple]:
    return {c: SHAPE for c in cases}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under the pool folder (what a crash could have torn)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def query(pool, cases, **kw):
    kw = {"expert": "simulated", "sampler": "random", "iteration": 0, **kw}
    return pool.add_query(cases, {c: (1, 2, 3) for c in cases}, **kw)


# -- persistence ------------------------------------------------------------------------------------
def test_new_pool_is_written_and_reopened(tmp_path):
    pool = LabeledPool.open(tmp_path, 3, reversed(CASES))
    state = json.loads((tmp_path / "pool.json").read_text())
    assert state["budget"] == 3 and state["training_cases"] == CASES and state["rounds"] == []
    again = LabeledPool.open(tmp_path, 3, CASES)
    assert again.state == pool.state
    assert again.unlabeled_cases == CASES and again.remaining_budget == 3 and again.pending_round is None


def test_rounds_and_annotations_survive_a_restart(tmp_path):
    pool = LabeledPool.open(tmp_path, 4, CASES)
    entry = query(pool, CASES[:2], scores={CASES[0]: 0.5})
    assert entry["status"] == "pending" and entry["round"] == 0
    restarted = LabeledPool.open(tmp_path, 4, CASES)
    assert restarted.pending_round == entry and restarted.pending_cases == CASES[:2]
    assert restarted.remaining_budget == 2 and restarted.unlabeled_cases == CASES[2:]
    given = annotations(CASES[:2])
    restarted.answer(given, shapes(CASES[:2]))
    query(restarted, CASES[2:3], expert="human", sampler="HER", iteration=250)

    final = LabeledPool.open(tmp_path, 4, CASES)
    assert final.labeled_cases == CASES[:2] and final.n_labeled_slices == 6
    assert [r["status"] for r in final.rounds] == ["answered", "pending"]
    assert final.rounds[1]["sampler"] == "HER" and final.rounds[1]["iteration"] == 250
    assert final.remaining_budget == 1
    for c in CASES[:2]:
        ann = final.annotation(c)
        assert ann.slices == (1, 2, 3)
        for a in range(3):
            np.testing.assert_array_equal(ann.planes[a], given[c].planes[a])
        vol = ann.to_volume(SHAPE, ignore_value=-1)
        np.testing.assert_array_equal(vol[1], dense(CASES.index(c))[1])
        assert (vol == -1).sum() > 0
    assert "2 of 4 scans labeled (6 slices)" in final.summary()


def test_a_pool_of_another_run_is_refused(tmp_path):
    LabeledPool.open(tmp_path, 3, CASES)
    with pytest.raises(PoolError, match="other training scans"):
        LabeledPool.open(tmp_path, 3, CASES[:-1])
    with pytest.raises(PoolError, match="budget is 3 scans, now 4"):
        LabeledPool.open(tmp_path, 4, CASES)


def test_a_corrupt_pool_file_is_named(tmp_path):
    LabeledPool.open(tmp_path, 3, CASES)
    (tmp_path / "pool.json").write_text("{broken")
    with pytest.raises(PoolError, match="pool.json is not valid JSON"):
        LabeledPool.open(tmp_path, 3, CASES)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, match", [(7, "larger than the 6 training scans"), (0, "at least one scan"),
                                           (-2, "at least one scan")])
def test_bad_budget_is_refused_and_writes_nothing(tmp_path, budget, match):
    with pytest.raises(PoolError, match=match):
        LabeledPool.open(tmp_path / "pool", budget, CASES)
    assert not (tmp_path / "pool").exists()


def test_budget_equal_to_the_training_scans_is_fine(tmp_path):
    assert LabeledPool.open(tmp_path, len(CASES), CASES).remaining_budget == len(CASES)


def test_bad_queries_are_refused(tmp_path):
    pool = LabeledPool.open(tmp_path, 3, CASES)
    before = snapshot(tmp_path)
    with pytest.raises(PoolError, match="unknown"):
        query(pool, ["nope"])
    with pytest.raises(PoolError):
        query(pool, [CASES[0], CASES[0]])
    with pytest.raises(PoolError, match="exceed the budget"):
        query(pool, CASES[:4])
    assert snapshot(tmp_path) == before
    query(pool, CASES[:1])
    with pytest.raises(PoolError, match="still waiting"):
        query(pool, CASES[1:2])
    pool.answer(annotations(CASES[:1]), shapes(CASES[:1]))
    with pytest.raises(PoolError, match="already labeled"):
        query(pool, CASES[:1])
    with pytest.raises(PoolError, match="no round is waiting"):
        pool.answer(annotations(CASES[:1]), shapes(CASES[:1]))


@pytest.mark.parametrize("bad", ["plane_shape", "slice_range", "missing"])
def test_bad_annotations_are_refused_and_nothing_changes(tmp_path, bad):
    pool = LabeledPool.open(tmp_path, 3, CASES)
    query(pool, CASES[:2])
    before = snapshot(tmp_path)
    given = annotations(CASES[:2])
    if bad == "plane_shape":  # e.g. a label of another scan
        other = CrossAnnotation.from_dense(np.zeros((6, 7, 9), np.uint8), (1, 2, 3))
        given[CASES[1]] = other
        match = rf"{CASES[1]}: plane 0 has shape \(7, 9\), expected \(7, 8\)"
    elif bad == "slice_range":
        given[CASES[1]] = CrossAnnotation((6, 2, 3), given[CASES[1]].planes)
        match = rf"{CASES[1]}: slice 6 along axis 0 is outside 0..5"
    else:
        del given[CASES[1]]
        match = rf"no labels for \['{CASES[1]}'\]"
    with pytest.raises(PoolError, match=match):
        pool.answer(given, shapes(CASES[:2]))
    assert snapshot(tmp_path) == before  # not even the first, good annotation was written
    reopened = LabeledPool.open(tmp_path, 3, CASES)
    assert reopened.pending_cases == CASES[:2] and reopened.labeled_cases == []


def test_a_cross_annotation_has_three_planes():
    with pytest.raises(ValueError, match="exactly three"):
        CrossAnnotation((1, 2), (np.zeros((2, 2)), np.zeros((2, 2))))


# -- atomicity within the process ----------------------------------------------------------------------
def test_failure_on_the_second_array_leaves_the_old_state(tmp_path, monkeypatch):
    pool = LabeledPool.open(tmp_path, 3, CASES)
    query(pool, CASES[:2])
    pool_json = (tmp_path / "pool.json").read_bytes()
    real, calls = atomic.save_npz, []

    def second_fails(path, **arrays):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, **arrays)

    monkeypatch.setattr(atomic, "save_npz", second_fails)
    with pytest.raises(OSError, match="disk full"):
        pool.answer(annotations(CASES[:2]), shapes(CASES[:2]))
    monkeypatch.undo()
    assert (tmp_path / "pool.json").read_bytes() == pool_json
    reopened = LabeledPool.open(tmp_path, 3, CASES)
    assert reopened.pending_cases == CASES[:2] and reopened.labeled_cases == []
    reopened.answer(annotations(CASES[:2]), shapes(CASES[:2]))  # the retry works
    assert LabeledPool.open(tmp_path, 3, CASES).labeled_cases == CASES[:2]


def test_failure_while_replacing_pool_json_leaves_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    pool = LabeledPool.open(tmp_path, 3, CASES)
    query(pool, CASES[:2])
    pool_json = (tmp_path / "pool.json").read_bytes()

    def replace(src, dst):
        if Path(dst).name == "pool.json":
            raise OSError("power cut")
        return os.rename(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="power cut"):
        pool.answer(annotations(CASES[:2]), shapes(CASES[:2]))
    monkeypatch.undo()
    assert (tmp_path / "pool.json").read_bytes() == pool_json
    assert not list(tmp_path.rglob(".tmp-*"))
    assert LabeledPool.open(tmp_path, 3, CASES).labeled_cases == []


def test_a_failed_commit_leaves_the_object_as_it_was(tmp_path, monkeypatch):
    pool = LabeledPool.open(tmp_path, 3, CASES)
    query(pool, CASES[:2])

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "write_json", fail)
    with pytest.raises(OSError):
        pool.answer(annotations(CASES[:2]), shapes(CASES[:2]))
    assert pool.pending_round is not None and pool.labeled_cases == []


# -- atomicity across a SIGKILL -------------------------------------------------------------------------
_KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from nnunet_fmabs import atomic
    from nnunet_fmabs.annotation.pool import CrossAnnotation, LabeledPool

    folder, hook, action = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    cases = [f"case_{{i:03d}}" for i in range(6)]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if hook == "after_first_array":
        real, n = atomic.save_npz, []
        def save_npz(path, **arrays):
            real(path, **arrays)
            n.append(path)
            die()
        atomic.save_npz = save_npz
    elif hook in ("before_replace", "after_replace"):
        real_replace = os.replace
        def replace(src, dst):
            if Path(dst).name == "pool.json":
                if hook == "after_replace":
                    real_replace(src, dst)
                die()
            return real_replace(src, dst)
        atomic.os.replace = replace
    pool = LabeledPool.open(folder, 3, cases)
    if action == "answer":
        rng = np.random.default_rng(0)
        ann = {{c: CrossAnnotation.from_dense(rng.integers(0, 3, {shape}).astype(np.uint8), (1, 2, 3))
               for c in pool.pending_cases}}
        pool.answer(ann, {{c: {shape} for c in ann}})
    else:
        pool.add_query(cases[2:3], {{cases[2]: (1, 2, 3)}}, expert="simulated", sampler="random", iteration=5)
    print("survived")
""").format(shape=SHAPE)


def _run_killed(tmp_path, hook, action):
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "pool"), hook, action],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout


@pytest.mark.parametrize("hook, new_state", [("after_first_array", False), ("before_replace", False),
                                             ("after_replace", True)])
def test_sigkill_during_answer_leaves_old_or_new_state(tmp_path, hook, new_state):
    pool = LabeledPool.open(tmp_path / "pool", 3, CASES)
    query(pool, CASES[:2])
    old = (tmp_path / "pool" / "pool.json").read_bytes()
    _run_killed(tmp_path, hook, "answer")
    reopened = LabeledPool.open(tmp_path / "pool", 3, CASES)  # never torn: it parses
    if new_state:
        assert reopened.labeled_cases == CASES[:2] and reopened.pending_round is None
        for c in CASES[:2]:
            assert reopened.annotation(c).planes[0].shape == SHAPE[1:]
    else:
        assert (tmp_path / "pool" / "pool.json").read_bytes() == old
        assert reopened.labeled_cases == [] and reopened.pending_cases == CASES[:2]
        reopened.answer(annotations(CASES[:2]), shapes(CASES[:2]))  # the next process finishes the round
        assert LabeledPool.open(tmp_path / "pool", 3, CASES).labeled_cases == CASES[:2]


def test_sigkill_during_add_query_leaves_the_old_state(tmp_path):
    pool = LabeledPool.open(tmp_path / "pool", 3, CASES)
    query(pool, CASES[:2])
    pool.answer(annotations(CASES[:2]), shapes(CASES[:2]))
    old = (tmp_path / "pool" / "pool.json").read_bytes()
    _run_killed(tmp_path, "before_replace", "query")
    assert (tmp_path / "pool" / "pool.json").read_bytes() == old
    reopened = LabeledPool.open(tmp_path / "pool", 3, CASES)
    assert reopened.pending_round is None and reopened.labeled_cases == CASES[:2]
