"""Command line of the training rooms.

python -m dicetalk_core.train embedder --out runs/embedder --steps 300
  trains the emotion embedder with InfoNCE on synthetic clips, saves safetensors checkpoints, reloads the
  final one and reports the loss and the cluster separation (d_inter / d_intra) before and after.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from ..emotion.presets import save_emotion_prior
from .checkpoint import load_embedder
from .embedder import EmbedderConfig, EmotionEmbedder
from .embedder_training import TrainSettings, cluster_metrics, train_embedder
from .synthetic import SyntheticClips

logger = logging.getLogger("dicetalk_core.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dicetalk_core.train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    emb = sub.add_parser("embedder", help="train the emotion embedder on synthetic clips")
    emb.add_argument("--out", type=Path, required=True, help="folder for the checkpoints")
    emb.add_argument("--steps", type=int, default=300)
    emb.add_argument("--lr", type=float, default=1e-3)
    emb.add_argument("--dim", type=int, default=256, help="prior width (256 = the presets' width)")
    emb.add_argument("--layers", type=int, default=2)
    emb.add_argument("--heads", type=int, default=4)
    emb.add_argument("--emotions", type=int, default=8, help="synthetic emotions")
    emb.add_argument("--frames", type=int, default=16, help="frames per synthetic clip")
    emb.add_argument("--temperature", type=float, default=0.1)
    emb.add_argument("--modality-dropout", type=float, default=0.3)
    emb.add_argument("--save-every", type=int, default=0, help="also save every K steps (0: only the final)")
    emb.add_argument("--seed", type=int, default=0)
    emb.add_argument("--export-presets", type=Path, help="write each emotion's mean mu as a preset (dim 256 only)")
    return parser.parse_args(argv)


def run_embedder(args: argparse.Namespace) -> int:
    data = SyntheticClips(num_emotions=args.emotions, frames=args.frames, seed=args.seed)
    config = EmbedderConfig(
        audio_dim=data.audio_dim,
        visual_dim=data.visual_dim,
        dim=args.dim,
        layers=args.layers,
        heads=args.heads,
        max_frames=max(args.frames, 16),
    )
    settings = TrainSettings(
        steps=args.steps,
        lr=args.lr,
        emotions_per_batch=min(6, args.emotions),
        temperature=args.temperature,
        modality_dropout=args.modality_dropout,
        seed=args.seed,
        save_every=args.save_every,
    )
    torch.manual_seed(args.seed)
    before = cluster_metrics(EmotionEmbedder(config), data, settings.eval_identities)
    every = max(1, args.steps // 10)

    def report(step: int, loss: float) -> None:
        if step % every == 0 or step == 1:
            logger.info("step %d/%d  InfoNCE %.4f", step, args.steps, loss)

    _, losses = train_embedder(config, data, settings, args.out, on_step=report)
    model, meta = load_embedder(args.out / "embedder.safetensors")
    after = cluster_metrics(model, data, settings.eval_identities)
    head, tail = sum(losses[:10]) / min(10, len(losses)), sum(losses[-10:]) / min(10, len(losses))
    logger.info("loss: first 10 steps %.4f -> last 10 steps %.4f", head, tail)
    logger.info(
        "held-out clusters before training: d_inter %.3f / d_intra %.3f = %.2f",
        before.d_inter,
        before.d_intra,
        before.ratio,
    )
    logger.info(
        "held-out clusters after (reloaded %s, step %s): d_inter %.3f / d_intra %.3f = %.2f",
        args.out / "embedder.safetensors",
        meta["step"],
        after.d_inter,
        after.d_intra,
        after.ratio,
    )
    if args.export_presets is not None:
        if args.dim != 256:
            logger.error("--export-presets needs --dim 256 (the presets' width).")
            return 2
        export_presets(model, data, settings, args.export_presets)
    return 0


@torch.no_grad()
def export_presets(model: EmotionEmbedder, data: SyntheticClips, settings: TrainSettings, folder: Path) -> None:
    """Presets as the paper makes them: the mean ``mu`` over many clips of each emotion."""
    g = torch.Generator().manual_seed(settings.seed + 7)
    folder.mkdir(parents=True, exist_ok=True)
    for e in range(data.num_emotions):
        emotions = torch.full((32,), e)
        ids = torch.randint(data.num_identities, (32,), generator=g)
        mu = model(*data.clips(emotions, ids, g)).mu.mean(0)
        path = save_emotion_prior(folder / f"synthetic_{e}", mu)
        logger.info("preset %s", path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "embedder":
        return run_embedder(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
