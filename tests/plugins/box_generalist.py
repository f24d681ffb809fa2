"""A cheap third-party generalist for CI runs through the stock CLI (registered by entry point).

It thresholds the slice at the mean intensity inside the box: quick, deterministic, and enough
to exercise every step of a pseudo-label round. The real LiteMedSAM runs in its own tests.
"""
from nnunet_fmabs.demo import DemoBoxGeneralist as BoxThresholdGeneralist  # one stand-in, shared with the demo


class FailsAfterFirstRoundGeneralist(BoxThresholdGeneralist):
    """Answers the first pseudo-label round, then raises (a generalist failing mid-training)."""

    def segment(self, slices, boxes, points=None):
        import os

        marker = os.environ.get("FMABS_TEST_FAIL_IF_EXISTS")
        if marker and os.path.exists(marker):
            raise RuntimeError("simulated generalist failure (out of GPU memory)")
        return super().segment(slices, boxes, points)
