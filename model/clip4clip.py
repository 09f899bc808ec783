"""CLIP4Clip (Luo et al. 2021, arXiv 2104.08860) on an open_clip CLIP.

Video (B, T, 3, H, W) + frame mask (B, T) -> per-frame CLIP image features (2D or 3D patch embedding) ->
similarity head. Text token ids (..., L) -> CLIP text features. The model returns features and the
exp'd logit scale; losses live in model.losses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.backbone import create_clip, create_tokenizer
from model.config import CLIP4ClipConfig
from model.heads import TightTransfHead, build_head
from model.openclip_import import open_clip
from model.patch import TemporalPatchEmbed, patch_embed_2d

_text_global_pool = open_clip.transformer.text_global_pool


class CLIP4Clip(nn.Module):
    """Submodules: `clip` (the open_clip CLIP), `patch3d` (3D patch embedding or None), `head`.

    Weights the forward never uses are frozen (requires_grad False), so DDP needs no
    find_unused_parameters: CLIP's 2D conv1 in a 3D model (kept, as CLIP4Clip keeps it, for the checkpoint
    layouts) and logit_scale under tightTransf (its pair scores are not scaled dot products).
    """

    def __init__(self, config: CLIP4ClipConfig, clip: open_clip.CLIP):
        super().__init__()
        self.config = config
        self.clip = clip
        self.patch3d = TemporalPatchEmbed.from_conv2d(clip.visual.conv1) if config.patch == "3d" else None
        self.head = build_head(config, clip)
        if self.patch3d is not None:
            clip.visual.conv1.requires_grad_(False)
        if self.is_tight:
            clip.logit_scale.requires_grad_(False)

    @classmethod
    def from_config(cls, config: CLIP4ClipConfig) -> CLIP4Clip:
        """Builds the backbone through open_clip (downloading/reading `config.pretrained`), then the head."""
        return cls(config, create_clip(config.backbone, config.pretrained, config.quick_gelu))

    @property
    def image_size(self) -> int:
        """Side of the square frames the model expects (pixels): what the data pipeline crops to."""
        height, width = self.clip.visual.image_size
        assert height == width, "CLIP4Clip backbones are square"
        return height

    @property
    def image_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of 0-1 RGB that frames are normalised with before the model (open_clip's)."""
        preprocess = open_clip.get_model_preprocess_cfg(self.clip)
        return tuple(preprocess["mean"]), tuple(preprocess["std"])

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[1]

    @property
    def is_tight(self) -> bool:
        return isinstance(self.head, TightTransfHead)

    def tokenizer(self):
        """open_clip's tokenizer for the backbone, context length max_words (longer captions truncated)."""
        return create_tokenizer(self.config.backbone, self.config.max_words)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids (..., L) -> text features (..., D), L2-normalised unless normalize=False.

        Uses only the first L text positions (CLIP4Clip does the same), which with CLIP's causal mask gives
        the features open_clip computes on the same tokens padded to 77.
        """
        self._check_tokens(tokens)
        flat = tokens.reshape(-1, tokens.shape[-1])
        features = self._encode_text_flat(flat)
        features = F.normalize(features, dim=-1) if normalize else features
        return features.reshape(*tokens.shape[:-1], features.shape[-1])

    def _encode_text_flat(self, tokens: torch.Tensor) -> torch.Tensor:
        clip, length = self.clip, tokens.shape[1]
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]  # (N, L, width)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = _text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=clip.text_eos_id)  # (N, width)
        return (
            x @ clip.text_projection
            if isinstance(clip.text_projection, nn.Parameter)
            else clip.text_projection(x)
        )

    def encode_frames(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W), (B, T) -> raw per-frame CLIP image features (B, T, D) (not normalised); zero at
        padded frames."""
        mask = self._check_video(video, mask)
        batch, frames = mask.shape
        if self.patch3d is None:
            patches = patch_embed_2d(self.clip.visual.conv1, video)
        else:
            # Padded frames are zeroed, so what sits in them never reaches real frames through the time taps.
            video = torch.where(mask[:, :, None, None, None], video, 0.0)
            patches = self.patch3d(video)
        features = vision_features_from_patches(self.clip.visual, patches).reshape(batch, frames, -1)
        return torch.where(mask.unsqueeze(-1), features, 0.0)  # padded positions: zeros, whatever was there

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised video features (B, D) from the head; for tightTransf the raw frame features (B, T, D)."""
        frames = self.encode_frames(video, mask)
        return frames if self.is_tight else self.head(frames, mask.bool())

    def score_pairs(
        self, text_feats: torch.Tensor, frame_feats: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """tightTransf only: scores (N_text, B) from encode_text(tokens, normalize=False) (N_text, D),
        encode_video(...) (B, T, D) and the frame mask (B, T)."""
        if not self.is_tight:
            raise ValueError(
                f"score_pairs needs the tightTransf head; this model's head is {self.config.head!r}"
            )
        return self.head(text_feats, frame_feats, mask.bool())

    def forward(
        self, video: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """dict(video=(B, D), text=(..., D), logit_scale=()) -- normalised features, exp'd scale.

        tightTransf: dict(scores=(N_text, B), text=(N_text, D) raw, video=(B, T, D) raw, logit_scale), where
        the texts are all leading dims of `tokens` flattened.
        """
        logit_scale = self.clip.logit_scale.exp()
        if not self.is_tight:
            return dict(
                video=self.encode_video(video, mask), text=self.encode_text(tokens), logit_scale=logit_scale
            )
        text = self.encode_text(tokens, normalize=False).reshape(-1, self.embed_dim)
        frames = self.encode_video(video, mask)
        return dict(
            scores=self.score_pairs(text, frames, mask), text=text, video=frames, logit_scale=logit_scale
        )

    @torch.no_grad()
    def clamp_logit_scale(self, max_scale: float = 100.0) -> None:
        """Keep exp(logit_scale) <= 100 after each optimizer step, as CLIP and open_clip do (it would grow unbounded)."""
        self.clip.logit_scale.clamp_(0, math.log(max_scale))

    def param_groups(self, lr: float, coef_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: CLIP weights (incl. the 3D patch embedding made from them) at lr * coef_lr, new
        head modules at lr; no weight decay on biases, norms, embeddings, logit_scale (all < 2-d parameters
        and every *embedding*)."""
        groups: dict[str, dict[str, Any]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            is_new = name.startswith("head.")
            decays = param.ndim >= 2 and "embedding" not in name
            key = ("new" if is_new else "clip") + ("_decay" if decays else "_no_decay")
            group = groups.setdefault(
                key,
                dict(
                    name=key,
                    params=[],
                    lr=lr if is_new else lr * coef_lr,
                    weight_decay=weight_decay if decays else 0.0,
                ),
            )
            group["params"].append(param)
        return list(groups.values())

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        context = self.clip.positional_embedding.shape[0]
        if tokens.ndim < 2 or tokens.shape[-1] > context or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"tokens must be integer ids shaped (..., L) with L <= {context}, got {tuple(tokens.shape)} "
                f"{tokens.dtype}; use model.tokenizer()"
            )

    def _check_video(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Validates shapes and the mask; returns the mask as bool (B, T)."""
        size = self.image_size
        if video.ndim != 5 or video.shape[2] != 3 or video.shape[3:] != (size, size):
            raise ValueError(f"video must be (B, T, 3, {size}, {size}), got {tuple(video.shape)}")
        if video.shape[1] > self.config.max_frames:
            raise ValueError(f"{video.shape[1]} frames exceed max_frames={self.config.max_frames}")
        if mask.shape != video.shape[:2]:
            raise ValueError(f"mask must be (B, T) = {tuple(video.shape[:2])}, got {tuple(mask.shape)}")
        return check_frame_mask(mask)


def check_frame_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool (B, T) mask; each row must be n >= 1 real frames followed by padding."""
    mask = mask.bool()
    if not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError(
            "frame mask rows must be 1..T real frames followed by padding (True...True False...)"
        )
    return mask


def vision_features_from_patches(
    visual: open_clip.transformer.VisionTransformer, patches: torch.Tensor
) -> torch.Tensor:
    """open_clip's VisionTransformer.forward after its conv1: (N, width, gh, gw) patch grid -> (N, D).

    Split out so the 3D patch embedding can feed the same tower.
    """
    x = patches.flatten(2).transpose(1, 2)  # (N, gh*gw, width)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    pooled, _ = visual._pool(visual.transformer(x))
    return pooled @ visual.proj
