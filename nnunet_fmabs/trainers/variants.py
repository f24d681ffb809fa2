"""Named trainers: the paper's methods, baselines and ablations, each one line (Table 1, 2.2, 2.3).

    FMABSTrainer_<sampler>_<fusion>   sampler in RAND, LC, HE, HER; fusion UA or MV
"""
from nnunet_fmabs.trainers.fmabs_trainer import FMABSTrainer


# -- FM-ABS grid: sampler x fusion (2.2, 2.3) ----------------------------------------------------
class FMABSTrainer_RAND_UA(FMABSTrainer): sampler, fusion = "random", "UA"
class FMABSTrainer_RAND_MV(FMABSTrainer): sampler, fusion = "random", "MV"
class FMABSTrainer_LC_UA(FMABSTrainer): sampler, fusion = "LC", "UA"
class FMABSTrainer_LC_MV(FMABSTrainer): sampler, fusion = "LC", "MV"
class FMABSTrainer_HE_UA(FMABSTrainer): sampler, fusion = "HE", "UA"
class FMABSTrainer_HE_MV(FMABSTrainer): sampler, fusion = "HE", "MV"
class FMABSTrainer_HER_UA(FMABSTrainer): sampler, fusion = "HER", "UA"
class FMABSTrainer_HER_MV(FMABSTrainer): sampler, fusion = "HER", "MV"


# -- the baselines' label schedule: the whole budget picked at random at t = 0, as Sup cross / MT get it,
#    so that FM-ABS vs MeanTeacherTrainer isolates the generalist (issue 12, defect 5)
class FMABSTrainer_RAND_MV_t0(FMABSTrainer_RAND_MV): active_rounds = False
class FMABSTrainer_RAND_UA_t0(FMABSTrainer_RAND_UA): active_rounds = False


# -- ablations of the collaboration (section 3, "without L_sup^SAM", "without L_c") ---------------
class FMABSTrainer_RAND_MV_noSAM(FMABSTrainer_RAND_MV): use_sam_loss = False
class FMABSTrainer_RAND_MV_noCons(FMABSTrainer_RAND_MV): use_consistency = False
class FMABSTrainer_HER_MV_noCons(FMABSTrainer_HER_MV): use_consistency = False


# -- the active label schedule alone: HER's rounds, partial CE only (no unlabeled stream, no Y_f, no L_c) ----
class SupCrossTrainer_HER(FMABSTrainer_HER_MV):
    use_unlabeled_stream, use_sam_loss, use_consistency = False, False, False


# -- baselines of Table 1: the whole budget picked at random at the start -------------------------
class SupCrossTrainer(FMABSTrainer):
    """Sup (cross; baseline): partial CE on the cross-labeled scans only."""
    active_rounds, use_unlabeled_stream, use_sam_loss, use_consistency = False, False, False, False


class MeanTeacherTrainer(FMABSTrainer):
    """MT: partial CE + L_c on labeled and unlabeled patches."""
    active_rounds, use_sam_loss = False, False


class UAMTTrainer(MeanTeacherTrainer):
    """UA-MT (Yu et al., MICCAI 2019): L_c only where the teacher's uncertainty is below a rising threshold."""
    uncertainty_aware = True


__all__ = [name for name, obj in list(globals().items())
           if isinstance(obj, type) and obj.__module__ == __name__]  # every trainer defined above, in order
