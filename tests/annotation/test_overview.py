"""``nnunet-fmabs status RUN_DIR --png OUT``: the queried slices with the expert's labels, one row per scan."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_fmabs.annotation.overview import overview_figure, queried_scans, save_overview
from nnunet_fmabs.annotation.pool import LabeledPool
from nnunet_fmabs.annotation.status import POOL_FILE, RunLayout, RunStateError, _read_json
from nnunet_fmabs.figures import figure_style, texts_outside
from tests.annotation.test_export import run_with_pool  # noqa: F401 - the fixture


def test_rows_are_the_queried_scans_in_round_order(run_with_pool):  # noqa: F811
    state = _read_json(run_with_pool["run_dir"] / POOL_FILE, "pool")
    rows = queried_scans(state)
    cases = run_with_pool["cases"]
    assert [(r["case"], r["round"], r["answered"], r["slices"]) for r in rows] == [
        (cases[0], 0, True, [3, 17, 30]), (cases[1], 0, True, [3, 17, 30]), (cases[2], 1, False, [1, 2, 3])]


def test_figure_shows_each_plane_with_its_labels_over_the_image(run_with_pool):  # noqa: F811
    run_dir = run_with_pool["run_dir"]
    state = _read_json(run_dir / POOL_FILE, "pool")
    pool = LabeledPool(run_dir / "fmabs" / "pool", state)
    layout = RunLayout.of(run_dir)
    rows = queried_scans(state)
    images = {r["case"]: np.asarray(layout.load_case(r["case"])[0][0]) for r in rows}
    with figure_style():
        fig = overview_figure(rows, images, pool, "title")
        assert texts_outside(fig) == []
        axes = np.asarray(fig.axes).reshape(3, 3)
        for i, row in enumerate(rows):
            for a in range(3):
                shown = axes[i][a].get_images()
                np.testing.assert_array_equal(shown[0].get_array().T,
                                              np.take(images[row["case"]], row["slices"][a], axis=a))
                plane = pool.annotation(row["case"]).planes[a] if row["answered"] else None
                if plane is not None and plane.any():  # the expert's labels, over the image, exactly there
                    overlay = shown[1].get_array()
                    np.testing.assert_array_equal(~np.ma.getmaskarray(overlay), plane.T > 0)
                    np.testing.assert_array_equal(overlay.compressed(), plane.T[plane.T > 0])
                else:
                    assert len(shown) == 1
            assert ("labeled" if row["answered"] else "waiting for the expert") in axes[i][0].get_ylabel()
        assert any(pool.annotation(rows[0]["case"]).planes[a].any() for a in range(3))


def test_png_written_with_and_without_the_preprocessed_images(run_with_pool, tmp_path, monkeypatch):  # noqa: F811
    from matplotlib.image import imread

    out = tmp_path / "pics" / "queried.png"
    text = save_overview(run_with_pool["run_dir"], out)
    assert text == f"wrote {out}: 3 queried scans"
    assert imread(out).shape[:2][0] > 400
    monkeypatch.setattr("nnunet_fmabs.annotation.status.RunLayout.preprocessed_root", None, raising=False)
    text = save_overview(run_with_pool["run_dir"], out, preprocessed_root=tmp_path / "nowhere")
    assert "3 without their image (set nnUNet_preprocessed" in text


def test_cli_status_png(run_with_pool, tmp_path, capsys):  # noqa: F811
    from nnunet_fmabs.cli import main

    out = tmp_path / "q.png"
    assert main(["status", str(run_with_pool["run_dir"]), "--png", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "budget: 3 scans" in printed and f"wrote {out}: 3 queried scans" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_to_draw_is_an_error(tmp_path):
    with pytest.raises(RunStateError, match="pool.json is missing"):
        save_overview(tmp_path, tmp_path / "x.png")
    LabeledPool.open(tmp_path / "fmabs" / "pool", budget=1, training_cases=["a"])
    with pytest.raises(RunStateError, match="no scan has been queried yet"):
        save_overview(tmp_path, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
