"""Parity of the audio projection (``audio_linear.pth``) with the official AudioProjModel."""

import torch
from golden import GoldenCase, assert_close

from dicetalk_core.loaders.checkpoints import load_strict
from dicetalk_core.models import AudioProjection


def check(case: GoldenCase, report: dict) -> None:
    weights = case.group("weights.")
    model = load_strict(AudioProjection.from_state_dict(weights), weights, source=case.name, what="audio_proj")
    model.eval()
    atol, rtol = case.tolerance()
    embeds = case["inputs.audio_embeds"]
    assert_close("context_tokens", model(embeds), case["outputs.context_tokens"], atol, rtol, report)
    assert_close(
        "context_tokens_zero_input",
        model(torch.zeros_like(embeds)),
        case["outputs.context_tokens_zero_input"],
        atol,
        rtol,
        report,
    )
