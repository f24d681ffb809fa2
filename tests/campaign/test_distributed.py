"""The campaign under DDP: two CPU processes (torch.distributed, gloo) run the real round code on one run folder.

They must end with one pool and one set of pseudo labels equal to a single process's (same queries, same
Y_f), each labeling its share of the scans; a kill of either rank mid-round resumes to the same state.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from nnunet_fmabs.runstate import run_state

STEPS = (0, 30, 50, 60)


def _worker(rank: int, world: int, folder: str, kill: dict | None) -> None:
    import torch.distributed as dist

    from nnunet_fmabs.campaign import campaign as campaign_module
    from nnunet_fmabs.campaign import pseudo_round, rank_zero_first, run_due_distributed
    from tests.campaign.test_campaign import Net, open_campaign

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    seen = {"n": 0}

    def kill_point(name):
        if kill and kill["rank"] == rank and kill["point"] == name:
            seen["n"] += 1
            if seen["n"] == kill["nth"]:
                os._exit(9)  # like SIGKILL: no cleanup

    campaign_module.kill_point = kill_point
    pseudo_round.kill_point = kill_point
    labeled = []
    original = pseudo_round.label_cases

    def label_cases(campaign, teacher, index, partial, cases=None):
        labeled.append([index, list(cases)])
        return original(campaign, teacher, index, partial, cases=cases)

    import nnunet_fmabs.campaign.distributed as distributed

    distributed.label_cases = label_cases
    campaign = rank_zero_first(lambda: open_campaign(Path(folder) / "fmabs"))
    for t in STEPS:
        run_due_distributed(campaign, t, Net(), Net())
    Path(folder, f"rank{rank}.json").write_text(json.dumps(labeled))
    dist.barrier()
    dist.destroy_process_group()


def _run_two_ranks(folder: Path, kill: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rendezvous").unlink(missing_ok=True)
    mp.spawn(_worker, args=(2, str(folder), kill), nprocs=2, join=True)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict:
    """The state one process reaches through the same steps (tests.campaign.test_campaign)."""
    from tests.campaign.test_campaign import uninterrupted_state

    assert STEPS == (0, 30, 50, 60)
    return uninterrupted_state(tmp_path_factory.mktemp("single"))


def test_two_ranks_make_one_pool_and_one_set_of_pseudo_labels(tmp_path, single_process):
    _run_two_ranks(tmp_path / "ddp")
    assert run_state(tmp_path / "ddp") == single_process
    shares = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i for i, _ in shares[0]] == [i for i, _ in shares[1]] == [0, 1, 2, 3]  # both ranks in every round (the
    # first before training)
    for (_, mine), (_, theirs) in zip(*shares):  # each labels its half, together all scans, no scan twice
        assert mine and theirs and not set(mine) & set(theirs)
        assert sorted(mine + theirs) == sorted(f"scan_{i}" for i in range(8))


@pytest.mark.parametrize("rank", [0, 1])
def test_a_kill_of_either_rank_mid_round_resumes_to_the_same_state(tmp_path, rank, single_process):
    with pytest.raises(mp.ProcessExitedException):
        _run_two_ranks(tmp_path / "ddp", kill={"rank": rank, "point": "pseudo_label_case", "nth": 3})
    state = json.loads((tmp_path / "ddp" / "fmabs" / "pseudolabels" / "state.json").read_text()) \
        if (tmp_path / "ddp" / "fmabs" / "pseudolabels" / "state.json").is_file() else {"rounds": []}
    assert len(state["rounds"]) < 4  # it did die inside the rounds
    _run_two_ranks(tmp_path / "ddp")  # the job started again (nnUNetv2_train ... --c)
    assert run_state(tmp_path / "ddp") == single_process
