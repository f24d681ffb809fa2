"""Progress: tqdm on a terminal, plain lines through the log elsewhere (a training's log file)."""
from __future__ import annotations

from nnunet_fmabs.progress import progress


def test_plain_lines_in_a_log_at_most_every_interval_and_at_the_end():
    ticks = iter([0, 10, 70, 80, 200, 210])  # the clock: start, then after each item
    lines = []
    out = list(progress(range(5), "pseudo labels, round 0", lines.append, every_seconds=60, terminal=False,
                        clock=lambda: next(ticks)))
    assert out == [0, 1, 2, 3, 4]
    assert lines == ["pseudo labels, round 0: 2/5 (70 s, about 105 s left)",
                     "pseudo labels, round 0: 4/5 (200 s, about 50 s left)",
                     "pseudo labels, round 0: 5/5 (210 s, about 0 s left)"]


def test_a_terminal_gets_a_bar_and_no_log_lines(capsys):
    lines = []
    assert list(progress([1, 2], "scoring", lines.append, terminal=True)) == [1, 2]
    assert lines == [] and "scoring" in capsys.readouterr().err
