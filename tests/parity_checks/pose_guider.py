"""Parity of the pose guider (``pose_guider.pth``) with the official PoseGuider."""

from golden import GoldenCase, assert_close

from dicetalk_core.loaders.checkpoints import load_strict
from dicetalk_core.models import PoseGuider


def check(case: GoldenCase, report: dict) -> None:
    weights = case.group("weights.")
    model = load_strict(PoseGuider.from_state_dict(weights), weights, source=case.name, what="pose_guider")
    atol, rtol = case.tolerance()
    for inp, out in (("face_mask_video", "pose_features"), ("random_video", "pose_features_random")):
        assert_close(out, model.forward_video(case[f"inputs.{inp}"]), case[f"outputs.{out}"], atol, rtol, report)
