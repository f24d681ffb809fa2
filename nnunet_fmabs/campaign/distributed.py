"""The campaign under nnU-Net's DDP (``nnUNetv2_train ... -num_gpus N``): one pool, one set of pseudo labels.

Rank 0 alone answers the pending round, runs the active rounds (scores, queries, the expert, the pool
writes) and commits pseudo-label rounds; the other ranks wait for it, then read the pool again. A
pseudo-label round is sharded: each rank labels every N-th training scan with its own generalist into the
round's partial folder, then rank 0 checks the round (guard) and commits it. Every rank decides from the
same files, so all take the same decisions; a kill of any rank leaves what a single process would
(partial rounds resume scan by scan). Without an initialised process group these are the single-process
calls.
"""
from __future__ import annotations

from typing import Callable

from nnunet_fmabs.campaign.campaign import EXIT_AWAITING_EXPERT, AwaitingExpert, Campaign
from nnunet_fmabs.campaign.pseudo_round import finish_round, fingerprint, label_cases, merge_stats, round_teacher

_NOTHING, _LABELS, _AWAITING, _FAILED = 0, 1, 2, 3


def _group():
    """(rank, world size) of the initialised default process group, or None when there is none (or one rank)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.get_rank(), dist.get_world_size()


def _broadcast(value: int) -> int:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def rank_zero_first(make: Callable[[], Campaign]) -> Campaign:
    """Build the campaign on rank 0 first (it creates the run's files), then on the others."""
    import torch.distributed as dist

    group = _group()
    if group is None:
        return make()
    campaign = make() if group[0] == 0 else None
    dist.barrier()
    return campaign if campaign is not None else make()


def run_due_distributed(campaign: Campaign, t: int, student, teacher) -> bool:
    """:meth:`Campaign.run_due` for every rank of a DDP run (see the module docstring)."""
    group = _group()
    if group is None:
        return campaign.run_due(t, student, teacher)
    rank, world = group
    code, error = _NOTHING, None
    if rank == 0:
        try:
            code = _LABELS if campaign.run_rounds(t, student) else _NOTHING
        except AwaitingExpert as e:
            code, error = _AWAITING, e
        except BaseException as e:  # the other ranks must not wait for a rank that is gone
            code, error = _FAILED, e
    code = _broadcast(code)
    if error is not None:
        raise error
    if code == _AWAITING:
        raise SystemExit(EXIT_AWAITING_EXPERT)
    if code == _FAILED:
        raise RuntimeError("rank 0 failed in an active round; its log says why")
    if rank != 0 and code == _LABELS:
        campaign.reload()
    reason = campaign.pseudo_labels_due(t, code == _LABELS)
    if reason is not None:
        _sharded_pseudo_label_round(campaign, t, reason, teacher, rank, world)
    if code == _LABELS or reason is not None:
        campaign.save()  # nnU-Net writes checkpoints on rank 0 only
    return code == _LABELS or reason is not None


def _sharded_pseudo_label_round(campaign: Campaign, t: int, reason: str, teacher, rank: int, world: int) -> None:
    import torch.distributed as dist

    store = campaign.pl_store
    teacher = round_teacher(reason, teacher)
    teacher_fingerprint = fingerprint(teacher)  # DDP keeps the students, hence the teachers, identical
    index, partial = store.begin_round(teacher_fingerprint) if rank == 0 else (None, None)
    dist.barrier()
    if rank != 0:
        index, partial = store.begin_round(teacher_fingerprint, owner=False)  # rank 0's folder, as it is
    mine = list(campaign.pool.training_cases)[rank::world]
    stats, figure_case, failure = None, None, None
    try:
        stats, figure_case = label_cases(campaign, teacher, index, partial, cases=mine)
    except Exception as e:  # noqa: BLE001 - reported to every rank, handled like a single-process failure
        failure = f"rank {rank}: {type(e).__name__}: {e}"
    shares: list = [None] * world
    dist.all_gather_object(shares, (stats, failure))
    failures = [f for _, f in shares if f]
    if rank == 0 and not failures:
        try:
            finish_round(campaign, t, reason, index, partial, merge_stats([s for s, _ in shares]), figure_case,
                         teacher_fingerprint)
        except Exception as e:  # noqa: BLE001 - told to every rank below
            failures.append(f"rank 0 could not commit the round: {type(e).__name__}: {e}")
    if _broadcast(1 if failures else 0) and not failures:
        failures.append("rank 0 could not commit the round; its log says why")

    def outcome():
        if failures:
            raise RuntimeError("; ".join(failures))

    if campaign.guarded(t, outcome) and rank != 0:  # every rank counts the same failures
        campaign.reload()
