"""Paired comparisons of la_table1's runs: each method against references, on the same seeds and test scans.

Issue 12 asks paired questions (FM-ABS against Sup cross and MT of the same seed, on the same test scans),
and seed-to-seed noise on 7 test scans (~2 Dice points) is larger than most effects measured, so a method's
mean alone says little. la_table1's own table holds the runs of one invocation; this reads every scored run of
a workdir (``metrics/<run>/<method>.json``, run = ``seed<S>[_rep<r>][_<settings>]``) and prints, per method and
settings: the metric per run, its mean over runs, and against each reference (the reference method's run of the
same seed and repetition) the mean paired difference over runs, the test cases won and the paired t of the
cases' differences. A reference is a method (its runs without settings) or ``METHOD@SETTINGS`` (its runs with
those settings: an ablation of the same seed, e.g. ``FMABSTrainer_HER_MV@pl_source=teacher``, the same run with
the teacher's own mask as Y_f).

    python benchmarks/la_paired.py --workdir /tmp/la_nat
    python benchmarks/la_paired.py --workdir /tmp/la_nat --references SupCrossTrainer --metric hd95
    python benchmarks/la_paired.py --workdir /tmp/la_nat --references FMABSTrainer_HER_MV@pl_source=teacher
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RUN_NAME = re.compile(r"^(seed\d+(?:_rep\d+)?)(?:_(.+))?$")
PERCENT = {"dice", "jaccard"}  # stored as fractions, shown in % as in la_table1's table
LOWER_IS_BETTER = {"hd95", "asd", "hd95_mm", "asd_mm"}


def load_scores(workdir: Path, metric: str = "dice") -> dict[tuple[str, str, str], dict[str, float]]:
    """{(run, settings, method): {case: metric}} from every ``metrics/<run>/<method>.json`` of ``workdir``
    (evaluate_folders' files; foreground label 1). Run folders that la_table1 did not name are an error."""
    scores = {}
    for path in sorted((Path(workdir) / "metrics").glob("*/*.json")):
        match = RUN_NAME.match(path.parent.name)
        if match is None:
            raise ValueError(f"{path.parent}: not a la_table1 run folder (seed<S>[_rep<r>][_<settings>])")
        cases = json.loads(path.read_text())["cases"]
        scale = 100.0 if metric in PERCENT else 1.0
        values = {}
        for case, per_label in cases.items():
            value = per_label.get("1", {}).get(metric)
            if value is None:  # absent, or NaN (evaluate_folders writes it as null): cannot be paired
                raise ValueError(f"{path}: case {case} has no {metric!r} for label 1")
            values[case] = scale * float(value)
        scores[(match.group(1), match.group(2) or "", path.stem)] = values
    if not scores:
        raise FileNotFoundError(f"{Path(workdir) / 'metrics'}: no scored run (la_table1 writes them there)")
    return scores


def reference_key(reference: str) -> tuple[str, str]:
    """``METHOD`` or ``METHOD@SETTINGS`` -> (settings, method), as the keys of ``load_scores`` spell them."""
    method, _, settings = reference.partition("@")
    if not method:
        raise ValueError(f"reference {reference!r}: expected METHOD or METHOD@SETTINGS")
    return settings, method


def paired_t(differences: list[float]) -> float | None:
    """Paired t statistic of the cases' differences (row - reference, like ``diff``): mean / (sd / sqrt(n));
    None with fewer than two cases or no spread. A reading aid for 7-14 test scans, not a significance test."""
    if len(differences) < 2:
        return None
    spread = statistics.stdev(differences)
    return None if spread == 0 else statistics.fmean(differences) / (spread / len(differences) ** 0.5)


def paired_rows(scores: dict[tuple[str, str, str], dict[str, float]], references: list[str],
                metric: str = "dice") -> list[dict]:
    """One row per (settings, method): runs, their means, and per reference (``METHOD[@SETTINGS]``) the mean
    over paired runs of the case-mean difference (row - reference) and the cases where the row is better."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    keys = {ref: reference_key(ref) for ref in references}
    rows = []
    for settings, method in sorted({(s, m) for _, s, m in scores}):
        runs = sorted(run for run, s, m in scores if (s, m) == (settings, method))
        means = [sum(v := list(scores[(run, settings, method)].values())) / len(v) for run in runs]
        row = {"method": method, "settings": settings, "runs": runs, "per_run": means,
               "mean": sum(means) / len(means), "vs": {}}
        for ref in references:
            ref_settings, ref_method = keys[ref]
            if (settings, method) == (ref_settings, ref_method):
                continue
            diffs, per_case = [], []
            for run in runs:
                if (run, ref_settings, ref_method) not in scores:
                    continue
                ours, theirs = scores[(run, settings, method)], scores[(run, ref_settings, ref_method)]
                if set(ours) != set(theirs):
                    raise ValueError(f"run {run}: {method} ({settings or 'no settings'}) and {ref} were scored "
                                     f"on different test scans: {sorted(set(ours) ^ set(theirs))}")
                diffs.append(sum(ours[c] - theirs[c] for c in ours) / len(ours))
                per_case += [ours[c] - theirs[c] for c in ours]
            if diffs:
                row["vs"][ref] = {"diff": sum(diffs) / len(diffs), "wins": sum(sign * d > 0 for d in per_case),
                                  "cases": len(per_case), "runs": len(diffs), "t": paired_t(per_case)}
        rows.append(row)
    return rows


def markdown(rows: list[dict], references: list[str], metric: str = "dice") -> str:
    unit = " %" if metric in PERCENT else ""
    head = ["method", "settings", "runs", f"{metric}{unit} per run", "mean"]
    head += [f"vs {ref} (paired; cases won; t)" for ref in references]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['method']}`", r["settings"] or "-", ", ".join(r["runs"]),
                 ", ".join(f"{m:.2f}" for m in r["per_run"]), f"**{r['mean']:.2f}**"]
        for ref in references:
            v = r["vs"].get(ref)
            cells.append("-" if v is None else
                         f"{v['diff']:+.2f} ({v['runs']} run{'s' * (v['runs'] > 1)}; {v['wins']} of {v['cases']}"
                         + ("" if v["t"] is None else f"; t {v['t']:+.1f}") + ")")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="la_table1's --workdir")
    p.add_argument("--references", nargs="+", default=["SupCrossTrainer", "MeanTeacherTrainer"],
                   help="methods to pair with: METHOD (its runs without settings) or METHOD@SETTINGS")
    p.add_argument("--metric", default="dice", choices=["dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm"],
                   help="evaluate_folders' per-case key (hd95/asd: voxels of the evaluated grid; *_mm: mm)")
    args = p.parse_args(argv)
    table = markdown(paired_rows(load_scores(args.workdir, args.metric), args.references, args.metric),
                     args.references, args.metric)
    print(table)
    return table


if __name__ == "__main__":
    main()
