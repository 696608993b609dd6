"""One seed, one video: the seed alone reproduces the official noise draws of every pipeline case."""

import pytest
import torch
from golden import discover, golden_dir

from dicetalk_core.pipeline import InitialNoise

PIPELINE_CASES = [c for c in discover() if c.kind == "pipeline_end_to_end"]


@pytest.mark.skipif(not PIPELINE_CASES, reason=f"no pipeline golden cases in {golden_dir()}")
@pytest.mark.parametrize("case", PIPELINE_CASES, ids=[c.name for c in PIPELINE_CASES])
def test_seed_reproduces_the_stored_noise(case):
    augmentation, latents = case["inputs.aug_noise"], case["inputs.initial_noise"]
    noise = InitialNoise.from_seed(case.meta["seed"], tuple(augmentation.shape[-2:]), tuple(latents.shape))
    assert torch.equal(noise.augmentation, augmentation)
    assert torch.equal(noise.latents, latents)
    other = InitialNoise.from_seed(case.meta["seed"] + 1, tuple(augmentation.shape[-2:]), tuple(latents.shape))
    assert not torch.equal(other.latents, latents)
