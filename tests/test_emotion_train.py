"""Training side of the emotion path: the losses, the disentangled embedder, and a synthetic training run."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dicetalk_core.errors import CheckpointError
from dicetalk_core.models.emotion_bank import EmotionBank
from dicetalk_core.models.emotion_model import EmotionClassifier
from dicetalk_core.train.__main__ import main
from dicetalk_core.train.checkpoint import load_embedder
from dicetalk_core.train.embedder import EmbedderConfig, EmotionEmbedder
from dicetalk_core.train.embedder_training import cluster_metrics
from dicetalk_core.train.losses import emotion_discrimination_loss, info_nce, vq_objective
from dicetalk_core.train.synthetic import SyntheticClips


def test_info_nce_matches_its_formula_and_prefers_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    tau, c = 0.5, 0.01
    unit = F.normalize(x, dim=-1)
    expected = []
    for i in range(6):
        positives = [j for j in range(6) if j != i and labels[j] == labels[i]]
        if not positives:
            continue
        num = sum(math.exp(unit[i] @ unit[j] / tau) for j in positives)
        den = sum(math.exp(unit[i] @ unit[j] / tau) for j in range(6) if j != i) + c
        expected.append(-math.log(num / den))
    assert info_nce(x, labels, tau, c).item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)

    centres = torch.randn(3, 5, generator=g) * 3
    clustered = centres[labels] + 0.1 * torch.randn(6, 5, generator=g)
    assert info_nce(clustered, labels) < info_nce(clustered, labels[torch.tensor([0, 2, 5, 1, 3, 4])])
    with pytest.raises(ValueError, match="positive"):
        info_nce(x[:3], torch.tensor([0, 1, 2]))


def test_vq_and_discrimination_losses():
    torch.manual_seed(0)
    bank = EmotionBank(16, 8, 4)
    priors = torch.randn(5, 16)
    z = bank.fc(priors)
    nearest = bank.codes[torch.cdist(z, bank.codes).argmin(dim=1)]
    assert vq_objective(bank, priors).item() == pytest.approx(1.25 * F.mse_loss(nearest, z).item(), rel=1e-5)
    classifier = EmotionClassifier(12, (8, 6), 22).eval()
    maps = [torch.randn(4, 12, 3, 3) for _ in range(3)]
    labels = torch.tensor([0, 5, 21, 7])
    expected = sum(F.cross_entropy(classifier(m), labels) for m in maps) / 3
    assert emotion_discrimination_loss(classifier, maps, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_embedder_shapes_sampling_and_modality_dropout():
    torch.manual_seed(0)
    model = EmotionEmbedder(EmbedderConfig(audio_dim=6, visual_dim=4, dim=16, layers=1, heads=2, max_frames=8)).eval()
    audio, visual = torch.randn(3, 5, 6), torch.randn(3, 5, 4)
    out = model(audio, visual)
    assert out.mu.shape == out.sigma.shape == (3, 16) and torch.equal(out.sample, out.mu)
    sampled = model(audio, visual, sample=True, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(sampled.sample, sampled.mu) and (sampled.sigma > 0).all()
    keep = torch.tensor([True, False, True])
    other_audio = audio.clone()
    other_audio[1] += 5.0
    a = model(audio, visual, audio_keep=keep).mu
    b = model(other_audio, visual, audio_keep=keep).mu
    shifted = model(audio + 1.0, visual, audio_keep=keep).mu
    assert torch.allclose(a[1], b[1]) and torch.allclose(a[1], shifted[1])  # clip 1 ignores its audio
    assert not torch.allclose(a[0], shifted[0], atol=1e-3)  # clip 0 does not
    other_visual = visual.clone()
    other_visual[1] -= 3.0
    a = model(audio, visual, visual_keep=keep).mu
    b = model(audio, other_visual, visual_keep=keep).mu
    assert torch.allclose(a[1], b[1], atol=1e-6) and torch.allclose(a[0], b[0])
    assert model(None, visual).mu.shape == (3, 16) and model(audio, None).mu.shape == (3, 16)


def test_training_on_synthetic_clips_separates_emotions(tmp_path, caplog):
    out = tmp_path / "run"
    args = ["embedder", "--out", str(out), "--steps", "60", "--dim", "32", "--heads", "2", "--save-every", "30"]
    with caplog.at_level(logging.INFO, logger="dicetalk_core.train"):
        assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "embedder.safetensors",
        "embedder_step30.safetensors",
        "embedder_step60.safetensors",
    ]
    model, meta = load_embedder(out / "embedder.safetensors")
    final_loss = float(meta["final_loss"])
    step60, _ = load_embedder(out / "embedder_step60.safetensors")
    data = SyntheticClips(num_emotions=8, frames=16, seed=0)
    g = torch.Generator().manual_seed(5)
    audio, visual = data.clips(torch.arange(8), torch.arange(8) + 8, g)
    assert torch.equal(model(audio, visual).mu, step60(audio, visual).mu)  # reloads to the same weights

    torch.manual_seed(0)
    before = cluster_metrics(EmotionEmbedder(model.config), data, range(12, 16))
    after = cluster_metrics(model, data, range(12, 16))
    print(f"final loss {final_loss:.3f}; d_inter/d_intra before {before.ratio:.2f}, after {after.ratio:.2f}")
    assert after.ratio > before.ratio + 0.4 and after.ratio > 1.2
    loss_line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("loss:"))
    head, tail = float(loss_line.split()[4]), float(loss_line.split()[-1])  # "loss: first 10 steps H -> ... T"
    assert tail < 0.5 * head, loss_line

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"kind": "something"})
    with pytest.raises(CheckpointError, match="not an emotion-embedder checkpoint"):
        load_embedder(tmp_path / "other.safetensors")
