"""The FM-ABS campaign: pool, expert, active and pseudo-label rounds, apart from nnU-Net's SGD loop."""
from nnunet_fmabs.campaign.campaign import (EXIT_AWAITING_EXPERT, AwaitingExpert, Campaign, RunFolderTaken,
                                            make_expert)
from nnunet_fmabs.campaign.distributed import rank_zero_first, run_due_distributed
from nnunet_fmabs.campaign.plan import CampaignPlan
from nnunet_fmabs.campaign.source import (CaseSource, SlidingWindow, generalist_from_settings, nnunet_case_source,
                                          resume_command)

__all__ = ["EXIT_AWAITING_EXPERT", "AwaitingExpert", "Campaign", "CampaignPlan", "CaseSource", "RunFolderTaken",
           "SlidingWindow", "generalist_from_settings", "make_expert", "nnunet_case_source", "rank_zero_first",
           "resume_command", "run_due_distributed"]
