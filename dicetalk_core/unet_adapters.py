"""DICE-Talk's audio and emotion cross-attention on the stock diffusers SVD UNet.

The stock ``UNetSpatioTemporalConditionModel`` is patched, not copied (as IP-Adapter packs do):

* every ``attn2`` (spatial and temporal) gets diffusers' own ``IPAdapterAttnProcessor2_0`` holding
  the official ``to_k_ip``/``to_v_ip`` projections (index 0 = audio, 1 = emotion); every ``attn1``
  gets ``AttnProcessor2_0``. The weights sit in the processors, so ``unet.pth`` loads key for key.
* each ``TransformerSpatioTemporalModel`` becomes a :class:`DiceTransformerSpatioTemporalModel`,
  whose one changed method gives the temporal blocks the MEAN of the image/audio/emotion tokens over
  the window's frames (stock: the first frame's) and sends the face masks to the spatial blocks only.
* the UNet becomes a :class:`DiceUNet`, whose forward takes per-frame tokens, masks and the pose
  guider's features (added right after ``conv_in``) and carries them through the stock blocks in a
  :class:`DiceConditioning`, which the blocks pass along untouched as ``encoder_hidden_states``.

Two routings compute the same math (:data:`ROUTINGS`):

* ``"exact"`` (default): the cross-attentions get compact contexts. The temporal adapters project
  the window-mean tokens once per CFG branch, ``(B, T, C)``, and every pixel's queries attend to
  them (the official code repeats the tokens for all ``h*w`` pixels and projects every copy: 8.7 %
  of the UNet's FLOPs and ~2.6 GB transient at 512x512); the face masks are resampled once per
  level per UNet call and broadcast over channels instead of materialised per attention call.
  Only float rounding may differ (the golden cases still match to 0 or ~1e-7).
* ``"reference"``: diffusers' stock ``IPAdapterAttnProcessor2_0`` code path with the repeated
  contexts, step for step as the official code; kept to measure the exact routing against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.image_processor import IPAdapterMaskProcessor
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

NUM_ADAPTERS = 2  # 0 = audio, 1 = emotion
ROUTINGS = ("exact", "reference")


@dataclass(frozen=True)
class DiceConditioning:
    """What the cross-attentions of one UNet call see, carried through the stock blocks.

    Attributes:
        image_embeds: ``(B*F, 1, C)`` CLIP image embedding per frame (batch-major: ``b*F + f``).
        adapter_tokens: ``[audio, emotion]``, each ``(B*F, T, C)``.
        masks: ``[audio, emotion]`` pixel masks ``(1, 1, H, W)`` weighting the spatial adapters, or None.
        routing: one of :data:`ROUTINGS`.
    """

    image_embeds: torch.Tensor
    adapter_tokens: Sequence[torch.Tensor]
    masks: Sequence[torch.Tensor] | None = None
    routing: str = "exact"
    _level_masks: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def level_mask(self, adapter: int, num_queries: int, like: torch.Tensor) -> torch.Tensor:
        """Adapter ``adapter``'s mask at a level of ``num_queries`` pixels: ``(1, num_queries, 1)``.

        Resampled exactly as diffusers' ``IPAdapterMaskProcessor.downsample`` does (bicubic from full
        resolution), once per level and call, and left unrepeated: it broadcasts over batch and channels.
        """
        key = (adapter, num_queries)
        if key not in self._level_masks:
            mask = self.masks[adapter][:, 0]
            small = IPAdapterMaskProcessor.downsample(mask, 1, num_queries, 1)
            self._level_masks[key] = small.to(dtype=like.dtype, device=like.device)
        return self._level_masks[key]


@dataclass(frozen=True)
class SpatialContext:
    """Exact routing's context of a spatial cross-attention (one transformer level of one call).

    Attributes:
        image_embeds: ``(B*F, 1, C)``.
        adapter_tokens: ``[audio, emotion]``, each ``(B*F, T, C)``.
        masks: per adapter ``(1, h*w, 1)`` (or None: unmasked).
    """

    image_embeds: torch.Tensor
    adapter_tokens: Sequence[torch.Tensor]
    masks: Sequence[torch.Tensor | None]


@dataclass(frozen=True)
class TemporalContext:
    """Exact routing's context of a temporal cross-attention: window means, one per CFG branch.

    Attributes:
        image_embeds: ``(B, 1, C)`` mean over the window's frames.
        adapter_tokens: ``[audio, emotion]``, each ``(B, T, C)`` mean over the window's frames.
    """

    image_embeds: torch.Tensor
    adapter_tokens: Sequence[torch.Tensor]


MIN_PROJECTION_ROWS = 8


def _project(linear: torch.nn.Module, context: torch.Tensor) -> torch.Tensor:
    """``linear(context)`` for ``context (batch, T, C)``, rounded like a projection of many rows.

    The official code projects one copy of the tokens per pixel; on the CPU a matmul of fewer than
    4 rows takes another kernel that rounds differently, so tiny inputs are tiled up and cut back.
    """
    rows = context.shape[0] * context.shape[1]
    if rows >= MIN_PROJECTION_ROWS:
        return linear(context)
    tiles = -(-MIN_PROJECTION_ROWS // rows)
    return linear(context.repeat(tiles, 1, 1))[: context.shape[0]]


def _attend(attn: Attention, query: torch.Tensor, context: torch.Tensor, to_k, to_v, batch: int) -> torch.Tensor:
    """SDPA of ``query (batch, Q, heads*d)`` over ``context (batch, T, C)`` -> ``(batch, Q, heads*d)``."""
    key, value = _project(to_k, context), _project(to_v, context)
    head_dim = key.shape[-1] // attn.heads
    q = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    k = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    v = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


class DiceAdapterAttnProcessor(IPAdapterAttnProcessor2_0):
    """diffusers' ``IPAdapterAttnProcessor2_0`` (same parameters and keys) that also reads compact contexts.

    Given a :class:`SpatialContext` or :class:`TemporalContext` it computes the stock processor's
    math without the repeated tensors; given anything else it is the stock processor, unchanged.
    """

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if isinstance(encoder_hidden_states, SpatialContext | TemporalContext):
            return self._compact(attn, hidden_states, encoder_hidden_states)
        return super().__call__(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale, ip_adapter_masks
        )

    def _compact(
        self, attn: Attention, hidden_states: torch.Tensor, context: SpatialContext | TemporalContext
    ) -> torch.Tensor:
        """Args:
        hidden_states: spatial ``(B*F, h*w, C)``; temporal ``(B*h*w, F, C)``, batch-major.

        A temporal context holds one ``(B, T, C)`` token set per CFG branch; the queries of all the
        branch's pixels are grouped into one attention batch ``(B, h*w*F)`` against it.
        """
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross:
            raise NotImplementedError("compact contexts support the SVD UNet's plain cross-attention only")
        residual = hidden_states
        batch = context.image_embeds.shape[0]
        query = attn.to_q(hidden_states)
        out = _attend(attn, query, context.image_embeds, attn.to_k, attn.to_v, batch)
        masks = context.masks if isinstance(context, SpatialContext) else [None] * len(self.scale)
        for tokens, scale, to_k_ip, to_v_ip, mask in zip(
            context.adapter_tokens, self.scale, self.to_k_ip, self.to_v_ip, masks, strict=True
        ):
            if scale == 0:
                continue
            adapter = _attend(attn, query, tokens, to_k_ip, to_v_ip, batch)
            out = out + scale * (adapter if mask is None else adapter * mask)
        out = attn.to_out[1](attn.to_out[0](out)).reshape(residual.shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _frame_mean(context: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """``(B*F, T, C)`` -> ``(B, T, C)``: the mean over each window's frames."""
    return context.reshape(batch, frames, *context.shape[-2:]).mean(dim=1)


def _window_mean(context: torch.Tensor, batch: int, frames: int, positions: int) -> torch.Tensor:
    """``(B*F, T, C)`` -> ``(B*positions, T, C)``: the mean over frames, repeated for every position."""
    mean = _frame_mean(context, batch, frames)[:, None]
    return mean.repeat(1, positions, 1, 1).reshape(batch * positions, *context.shape[-2:])


class DiceTransformerSpatioTemporalModel(TransformerSpatioTemporalModel):
    """Stock spatio-temporal transformer with DICE-Talk's context routing (see module docstring)."""

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: DiceConditioning,
        image_only_indicator: torch.Tensor,
        return_dict: bool = True,
    ) -> TransformerTemporalModelOutput | tuple[torch.Tensor]:
        """Args:
        hidden_states: ``(B*F, C, h, w)``.
        encoder_hidden_states: the call's :class:`DiceConditioning`.
        image_only_indicator: ``(B, F)``.
        """
        cond = encoder_hidden_states
        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        batch_size = batch_frames // num_frames
        positions = height * width

        cross_attention_kwargs = None
        if cond.routing == "reference":
            tokens = list(cond.adapter_tokens)
            if cond.masks is not None:
                cross_attention_kwargs = {"ip_adapter_masks": list(cond.masks)}
                tokens = [t.unsqueeze(1) for t in tokens]  # stock masked path wants (B*F, 1, T, C)
            spatial_context = (cond.image_embeds, tokens)
            temporal_context = (
                _window_mean(cond.image_embeds, batch_size, num_frames, positions),
                [_window_mean(t, batch_size, num_frames, positions) for t in cond.adapter_tokens],
            )
        else:
            masks = [None] * len(cond.adapter_tokens)
            if cond.masks is not None:
                masks = [cond.level_mask(i, positions, hidden_states) for i in range(len(cond.masks))]
            spatial_context = SpatialContext(cond.image_embeds, cond.adapter_tokens, masks)
            temporal_context = TemporalContext(
                _frame_mean(cond.image_embeds, batch_size, num_frames),
                [_frame_mean(t, batch_size, num_frames) for t in cond.adapter_tokens],
            )

        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, positions, inner_dim)
        hidden_states = self.proj_in(hidden_states)

        frame_ids = torch.arange(num_frames, device=hidden_states.device).repeat(batch_size, 1).reshape(-1)
        frame_emb = self.time_pos_embed(self.time_proj(frame_ids).to(dtype=hidden_states.dtype))[:, None, :]

        for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks, strict=True):
            hidden_states = block(
                hidden_states,
                encoder_hidden_states=spatial_context,
                cross_attention_kwargs=cross_attention_kwargs,
            )
            hidden_states_mix = temporal_block(
                hidden_states + frame_emb, num_frames=num_frames, encoder_hidden_states=temporal_context
            )
            hidden_states = self.time_mixer(
                x_spatial=hidden_states,
                x_temporal=hidden_states_mix,
                image_only_indicator=image_only_indicator,
            )

        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2)
        output = hidden_states.contiguous() + residual
        if not return_dict:
            return (output,)
        return TransformerTemporalModelOutput(sample=output)


@dataclass(frozen=True)
class UNetCall:
    """What every block of one :class:`DiceUNet` call shares (made by :meth:`DiceUNet.prepare`).

    Attributes:
        emb: ``(B*F, C_t)`` time embedding per frame.
        cond: the cross-attentions' :class:`DiceConditioning`.
        image_only_indicator: ``(B, F)`` zeros (video frames).
        batch_size: ``B``, the CFG branches of the call.
        num_frames: ``F``, the window's frames.
        forward_upsample_size: whether the up-samplers get explicit sizes (latent sides not multiples of
            ``2 ** num_upsamplers``).
    """

    emb: torch.Tensor
    cond: DiceConditioning
    image_only_indicator: torch.Tensor
    batch_size: int
    num_frames: int
    forward_upsample_size: bool


class DiceUNet(UNetSpatioTemporalConditionModel):
    """The SVD UNet with DICE-Talk's inputs; build with :func:`install_dice_adapters`.

    Attributes:
        routing: how the cross-attentions get their contexts, one of :data:`ROUTINGS` (module docstring).
    """

    routing: str = "exact"

    def set_routing(self, routing: str) -> None:
        """Choose ``"exact"`` (default) or ``"reference"`` (the official code's repeated contexts)."""
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.routing = routing

    def adapter_processors(self) -> list[IPAdapterAttnProcessor2_0]:
        return [p for p in self.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]

    def set_adapter_scales(self, audio: float, emotion: float) -> None:
        """Output scales of the audio and emotion cross-attentions (official: 1.0 and 1.0)."""
        for processor in self.adapter_processors():
            processor.scale = [float(audio), float(emotion)]

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        image_embeds: torch.Tensor,
        adapter_tokens: Sequence[torch.Tensor],
        added_time_ids: torch.Tensor,
        pose_features: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple[torch.Tensor]:
        """Predict for a batch of frame windows.

        Args:
            sample: ``(B, F, in_channels, h, w)`` scaled noisy latents concatenated with image latents.
            timestep: 0-d float32 tensor (``0.25 ln sigma`` for the EDM schedule).
            image_embeds: ``(B, 1, C)`` or per frame ``(B*F, 1, C)`` CLIP embeddings.
            adapter_tokens: ``[audio, emotion]``, each ``(B*F, T, C)``, batch-major.
            added_time_ids: ``(B, 3)`` = ``[fps, motion_bucket_id, motion_bucket_id_exp]``.
            pose_features: pose-guider features added after ``conv_in``: ``(B, F, C0, h, w)`` per frame, or
                ``(1, C0, h, w)`` broadcast to every frame (no copies), or None.
            masks: ``[audio, emotion]`` face masks ``(1, 1, H, W)`` for the spatial adapters, or None.

        Returns:
            ``(B, F, out_channels, h, w)`` model output (v-prediction).
        """
        sample, call = self.prepare(
            sample, timestep, image_embeds, adapter_tokens, added_time_ids, pose_features, masks
        )
        emb, cond, image_only_indicator = call.emb, call.cond, call.image_only_indicator

        down_block_res_samples: tuple[torch.Tensor, ...] = (sample,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": cond} if getattr(block, "has_cross_attention", False) else {}
            sample, res_samples = block(
                hidden_states=sample, temb=emb, image_only_indicator=image_only_indicator, **kwargs
            )
            down_block_res_samples += res_samples

        sample = self.mid_block(
            hidden_states=sample,
            temb=emb,
            encoder_hidden_states=cond,
            image_only_indicator=image_only_indicator,
        )

        upsample_size = None
        for i, block in enumerate(self.up_blocks):
            res_samples = down_block_res_samples[-len(block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
            if i < len(self.up_blocks) - 1 and call.forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            kwargs = {"encoder_hidden_states": cond} if getattr(block, "has_cross_attention", False) else {}
            sample = block(
                hidden_states=sample,
                temb=emb,
                res_hidden_states_tuple=res_samples,
                upsample_size=upsample_size,
                image_only_indicator=image_only_indicator,
                **kwargs,
            )

        sample = self.finish(sample, call)
        if not return_dict:
            return (sample,)
        return UNetSpatioTemporalConditionOutput(sample=sample)

    def prepare(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        image_embeds: torch.Tensor,
        adapter_tokens: Sequence[torch.Tensor],
        added_time_ids: torch.Tensor,
        pose_features: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, UNetCall]:
        """The part of :meth:`forward` before the down blocks (arguments as there).

        Returns ``conv_in``'s output plus the pose features ``(B*F, C0, h, w)`` and what every block shares.
        """
        batch_size, num_frames = sample.shape[:2]
        upsample_factor = 2**self.num_upsamplers
        forward_upsample_size = any(s % upsample_factor != 0 for s in sample.shape[-2:])

        timesteps = timestep.reshape(-1)[:1].to(sample.device).expand(batch_size)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape(batch_size, -1)
        emb = emb + self.add_embedding(time_embeds.to(emb.dtype))
        emb = emb.repeat_interleave(num_frames, dim=0)

        if image_embeds.shape[0] == batch_size:
            image_embeds = image_embeds.repeat_interleave(num_frames, dim=0)
        cond = DiceConditioning(
            image_embeds, list(adapter_tokens), None if masks is None else list(masks), routing=self.routing
        )

        sample = self.conv_in(sample.flatten(0, 1))
        if pose_features is not None:
            sample = sample + (pose_features.flatten(0, 1) if pose_features.ndim == 5 else pose_features)
        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)
        return sample, UNetCall(emb, cond, image_only_indicator, batch_size, num_frames, forward_upsample_size)

    def finish(self, sample: torch.Tensor, call: UNetCall) -> torch.Tensor:
        """The part of :meth:`forward` after the up blocks: ``(B*F, C, h, w)`` -> ``(B, F, out_channels, h, w)``."""
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return sample.reshape(call.batch_size, call.num_frames, *sample.shape[1:])


def install_dice_adapters(
    unet: UNetSpatioTemporalConditionModel,
    num_tokens: Sequence[int] = (32, 32),
    scales: Sequence[float] = (1.0, 1.0),
) -> DiceUNet:
    """Patch a stock SVD UNet in place into a :class:`DiceUNet` and return it.

    Adds the audio/emotion projections to every cross-attention (initialised, like the official
    code, as copies of that layer's ``to_k``/``to_v``; ``unet.pth`` then overwrites them), and the
    DICE-Talk context routing to every spatio-temporal transformer. Device and dtype follow the UNet.

    Args:
        unet: a stock ``UNetSpatioTemporalConditionModel`` (any size).
        num_tokens: tokens per frame of each adapter (audio, emotion).
        scales: output scale of each adapter.
    """
    if len(num_tokens) != NUM_ADAPTERS or len(scales) != NUM_ADAPTERS:
        raise ValueError("DICE-Talk has exactly two adapters: audio and emotion")
    processors = {}
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if name.endswith("attn1.processor"):
            processors[name] = AttnProcessor2_0()
            continue
        processor = DiceAdapterAttnProcessor(
            hidden_size=module.to_k.out_features,
            cross_attention_dim=module.to_k.in_features,
            num_tokens=list(num_tokens),
            scale=[float(s) for s in scales],
        ).to(device=module.to_k.weight.device, dtype=module.to_k.weight.dtype)
        with torch.no_grad():
            for to_k_ip, to_v_ip in zip(processor.to_k_ip, processor.to_v_ip, strict=True):
                to_k_ip.weight.copy_(module.to_k.weight)
                to_v_ip.weight.copy_(module.to_v.weight)
        processors[name] = processor
    unet.set_attn_processor(processors)
    for module in unet.modules():
        if type(module) is TransformerSpatioTemporalModel:
            module.__class__ = DiceTransformerSpatioTemporalModel
    unet.__class__ = DiceUNet
    return unet  # type: ignore[return-value]
