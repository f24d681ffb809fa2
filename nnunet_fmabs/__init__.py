"""nnunet-fmabs: FM-ABS (Xu et al., MICCAI 2024) as an nnU-Net v2 plugin.

Importing the package loads no model weights and no optional heavy dependency (DESIGN.md
invariant 6); trainers live in :mod:`nnunet_fmabs.trainers`.
"""
__version__ = "0.1.0"
