"""nnU-Net trainers of FM-ABS: one paradigm trainer, named variants as one-line subclasses."""
