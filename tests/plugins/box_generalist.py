"""A cheap third-party generalist for CI runs through the stock CLI (registered by entry point).

It thresholds the slice at the mean intensity inside the box: quick, deterministic, and enough
to exercise every step of a pseudo-label round. The real LiteMedSAM runs in its own tests.
"""
import numpy as np


class BoxThresholdGeneralist:
    def __init__(self, checkpoint=None, device="cpu", **options):
        self.calls = 0

    def segment(self, slices, boxes, points=None):
        masks = []
        for image, box in zip(slices, np.asarray(boxes)):
            self.calls += 1
            h, w = image.shape
            x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
            x1, y1 = min(int(box[2]), w - 1), min(int(box[3]), h - 1)
            mask = np.zeros((h, w), dtype=bool)
            if x1 >= x0 and y1 >= y0:
                region = np.nan_to_num(image[y0:y1 + 1, x0:x1 + 1])
                mask[y0:y1 + 1, x0:x1 + 1] = region > region.mean()
            masks.append(mask)
        return masks


class FailsAfterFirstRoundGeneralist(BoxThresholdGeneralist):
    """Answers the first pseudo-label round, then raises (a generalist failing mid-training)."""

    def segment(self, slices, boxes, points=None):
        import os

        marker = os.environ.get("FMABS_TEST_FAIL_IF_EXISTS")
        if marker and os.path.exists(marker):
            raise RuntimeError("simulated generalist failure (out of GPU memory)")
        return super().segment(slices, boxes, points)
