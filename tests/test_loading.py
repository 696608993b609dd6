"""Loading official-layout checkpoints: full-size key manifests, tiny round trips, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pickle_payload import MarkerPayload
from safetensors.torch import save_file

from dicetalk_core.errors import CheckpointError
from dicetalk_core.loaders.checkpoints import read_state_dict
from dicetalk_core.loaders.dice_talk import (
    build_dice_unet,
    build_on_meta,
    load_audio_projection,
    load_emotion_model,
    load_pose_guider,
)
from dicetalk_core.models import AudioProjection, EmotionModel, PoseGuider
from dicetalk_core.models.layouts import TINY
from dicetalk_core.unet_adapters import install_dice_adapters

MANIFESTS = Path(__file__).resolve().parents[2] / "shared" / "spec" / "manifests"


def manifest(name: str) -> dict:
    path = MANIFESTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"checkpoint manifests not found in {MANIFESTS}")
    return json.loads(path.read_text())


def meta_state(spec: dict) -> dict[str, torch.Tensor]:
    """Tensors on the meta device with exactly the manifest's key names and shapes."""
    return {k: torch.empty(v["shape"], device="meta") for k, v in spec["keys"].items()}


def test_full_size_unet_manifest_loads_strictly():
    spec = manifest("unet.pth")
    state = meta_state(spec)
    unet = build_dice_unet(spec["constructor"], state, source="unet manifest")
    assert len(unet.state_dict()) == spec["total_keys"] == 1556
    assert sum(p.numel() for p in unet.parameters()) == spec["total_parameters"]
    added = [k for k, v in spec["keys"].items() if v["origin"] == "added_dice_talk"]
    assert len(added) == spec["added_keys"] and all("to_k_ip" in k or "to_v_ip" in k for k in added)


@pytest.mark.parametrize(
    ("name", "factory"),
    [
        ("audio_linear.pth", AudioProjection.from_state_dict),
        ("emo_model.pth", EmotionModel.from_state_dict),
        ("pose_guider.pth", PoseGuider.from_state_dict),
    ],
)
def test_full_size_module_manifests_load_strictly(name, factory):
    spec = manifest(name)
    state = meta_state(spec)
    module = build_on_meta(lambda: factory(state), state, source=name, what=name)
    assert set(module.state_dict()) == set(spec["keys"])
    assert sum(p.numel() for p in module.parameters()) == spec["total_parameters"]


def test_full_size_unet_rejects_a_stock_svd_unet_state():
    spec = manifest("unet.pth")
    stock = {k: v for k, v in meta_state(spec).items() if "_ip." not in k}
    with pytest.raises(CheckpointError) as err:
        build_dice_unet(spec["constructor"], stock, source="svd_unet.safetensors")
    message = str(err.value)
    assert "svd_unet.safetensors" in message and "128 missing keys" in message
    assert "stock SVD UNet" in message


def tiny_emotion_model() -> EmotionModel:
    torch.manual_seed(0)
    return EmotionModel(
        in_dim=16, dim=8, intermediate_dim=12, num_tokens=3, num_codes=5, num_heads=2, classifier=(8, 6, 4, 3)
    )


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_emotion_model_round_trip(tmp_path, suffix):
    model = tiny_emotion_model().eval()
    path = tmp_path / f"emo_model{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), str(path))
    loaded = load_emotion_model(path, num_heads=2)
    prior = torch.randn(1, 2, 1, 1, 16)
    with torch.no_grad():
        for retrieval in (True, False):
            expected = model(prior, retrieval=retrieval).tokens
            assert torch.equal(loaded(prior, retrieval=retrieval).tokens, expected)


def test_tiny_audio_projection_and_pose_guider_round_trip(tmp_path):
    torch.manual_seed(1)
    projection = AudioProjection(input_dim=2 * 3 * 4, intermediate_dim=7, token_dim=5, num_tokens=3).eval()
    guider = PoseGuider(out_channels=6, block_out_channels=(2, 3, 4, 5)).eval()
    torch.save(projection.state_dict(), tmp_path / "audio_linear.pth")
    torch.save(guider.state_dict(), tmp_path / "pose_guider.pth")
    windows, mask = torch.randn(4, 2, 3, 4), torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(load_audio_projection(tmp_path / "audio_linear.pth")(windows), projection(windows))
        assert torch.equal(load_pose_guider(tmp_path / "pose_guider.pth")(mask), guider(mask))


def test_meta_built_unet_matches_a_normally_built_one():
    from diffusers import UNetSpatioTemporalConditionModel

    config = {**TINY.unet, "num_frames": 2}
    cross = config["cross_attention_dim"]
    torch.manual_seed(2)
    reference = install_dice_adapters(UNetSpatioTemporalConditionModel(**config)).eval()
    loaded = build_dice_unet(reference.config, reference.state_dict(), source="tiny")
    args = (torch.randn(3, 2, 8, 8, 8), torch.tensor(0.5))
    kwargs = dict(
        image_embeds=torch.randn(6, 1, cross),
        adapter_tokens=[torch.randn(6, 3, cross), torch.randn(6, 3, cross)],
        added_time_ids=torch.tensor([[12.5, 8.0, 16.0]] * 3),
        pose_features=torch.randn(3, 2, 32, 8, 8),
        masks=[torch.rand(1, 1, 64, 64)] * 2,
    )
    with torch.no_grad():
        assert torch.equal(loaded(*args, **kwargs).sample, reference(*args, **kwargs).sample)


def test_missing_truncated_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "emo_model.pth")
    model = tiny_emotion_model()
    save_file(model.state_dict(), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "emo_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_emotion_model(tmp_path / "emo_model.safetensors")
    torch.save(PoseGuider(4, (2, 3)).state_dict(), tmp_path / "pose.pth")
    with pytest.raises(CheckpointError, match="pose guider"):
        load_emotion_model(tmp_path / "pose.pth")


def test_mis_shaped_checkpoint_names_the_first_mismatches(tmp_path):
    state = tiny_emotion_model().state_dict()
    state["attention.fc_q.weight"] = torch.zeros(8, 9)
    torch.save(state, tmp_path / "emo_model.pth")
    with pytest.raises(CheckpointError, match=r"attention\.fc_q\.weight: file \(8, 9\) vs model \(8, 8\)"):
        load_emotion_model(tmp_path / "emo_model.pth", num_heads=2)


def test_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "payload_ran"
    state = {"proj1.weight": torch.zeros(2, 2), "evil": MarkerPayload(str(marker))}
    torch.save(state, tmp_path / "audio_linear.pth")
    with pytest.raises(CheckpointError, match="Python objects other than tensors"):
        load_audio_projection(tmp_path / "audio_linear.pth")
    assert not marker.exists()


def test_selective_reading_of_a_safetensors_file(tmp_path):
    from dicetalk_core.loaders.checkpoints import state_dict_keys

    tensors = {"model.diffusion_model.w": torch.ones(2), "first_stage_model.w": torch.zeros(3)}
    save_file(tensors, str(tmp_path / "single.safetensors"))
    assert sorted(state_dict_keys(tmp_path / "single.safetensors")) == sorted(tensors)
    part = read_state_dict(tmp_path / "single.safetensors", keep=lambda k: k.startswith("first_stage_model."))
    assert list(part) == ["first_stage_model.w"] and torch.equal(part["first_stage_model.w"], torch.zeros(3))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "single.safetensors").read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        state_dict_keys(tmp_path / "cut.safetensors")
