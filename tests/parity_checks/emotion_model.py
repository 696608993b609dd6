"""Parity of the emotion model (``emo_model.pth``): bank lookup, both bank modes, masks, preset, classifier."""

import torch
from golden import GoldenCase, assert_close

from dicetalk_core.loaders.checkpoints import load_strict
from dicetalk_core.models import EmotionModel


def check(case: GoldenCase, report: dict) -> None:
    weights = case.group("weights.")
    num_heads = case.meta["constructor"]["num_heads"]
    model = EmotionModel.from_state_dict(weights, num_heads=num_heads)
    load_strict(model, weights, source=case.name, what="emotion_model").eval()
    atol, rtol = case.tolerance()
    prompts, mask = case["inputs.emo_prompts"], case["inputs.emo_prompt_mask"]

    for retrieval in (True, False):
        mode = f"retrieval_{str(retrieval).lower()}"
        for suffix, m in (("nomask", None), ("mask", mask)):
            out = model(prompts, mask=m, retrieval=retrieval)
            assert_close(
                f"{mode}_{suffix}.emo_tokens",
                out.tokens,
                case[f"outputs.{mode}_{suffix}.emo_tokens"],
                atol,
                rtol,
                report,
            )
            assert_close(
                f"{mode}_{suffix}.vq_loss",
                out.vq_loss.reshape(1),
                case[f"outputs.{mode}_{suffix}.vq_loss"],
                atol,
                rtol,
                report,
            )

    lookup = model.codebook(prompts)
    assert_close("codebook.quantized", lookup.quantized, case["outputs.codebook.quantized"], atol, rtol, report)
    assert_close("codebook.vq_loss", lookup.vq_loss.reshape(1), case["outputs.codebook.vq_loss"], atol, rtol, report)
    assert_close("codebook.distances", lookup.distances, case["outputs.codebook.distances"], atol, rtol, report)
    assert_close("codebook.encoding_indices", lookup.indices, case["outputs.codebook.encoding_indices"], 0, 0, report)

    preset = case["inputs.preset_mu"]
    assert_close(
        "preset.encoding_indices",
        model.codebook(preset).indices,
        case["outputs.preset.encoding_indices"],
        0,
        0,
        report,
    )
    for retrieval in (True, False):
        mode = f"retrieval_{str(retrieval).lower()}"
        cond = model(preset, retrieval=retrieval)
        uncond = model(torch.zeros_like(preset), retrieval=retrieval)
        assert_close(
            f"preset.{mode}.emo_tokens",
            cond.tokens,
            case[f"outputs.preset.{mode}.emo_tokens"],
            atol,
            rtol,
            report,
        )
        assert_close(
            f"preset.{mode}.emo_tokens_zero_input",
            uncond.tokens,
            case[f"outputs.preset.{mode}.emo_tokens_zero_input"],
            atol,
            rtol,
            report,
        )
        assert_close(
            f"preset.{mode}.vq_loss",
            cond.vq_loss.reshape(1),
            case[f"outputs.preset.{mode}.vq_loss"],
            atol,
            rtol,
            report,
        )

    assert_close(
        "classifier_logits",
        model.classifier(case["inputs.classifier_x"]),
        case["outputs.classifier_logits"],
        atol,
        rtol,
        report,
    )
