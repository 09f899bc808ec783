"""CLIP4Clip's similarity heads (Luo et al. 2021, sec. 3.3), over per-frame CLIP features.

Loose heads (meanP, seqLSTM, seqTransf) turn frame features (B, T, D) into one normalised video feature
(B, D): an optional residual temporal model, then L2-normalise each frame, masked mean over valid frames,
L2-normalise again (as the CLIP4Clip code does). The tight head (tightTransf) scores (text, video) pairs
jointly with a cross transformer over [text feature; frame features].

Initialisation as in the paper: position embeddings from CLIP's text position embedding, transformer layers
from the first layers of CLIP's text transformer; the LSTM, type embeddings and final linears are random.
Masks are (B, T) bool, True for real frames; padded frames never influence real ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import CLIP4ClipConfig
from model.openclip_import import open_clip

Transformer = open_clip.transformer.Transformer
QuickGELU = open_clip.transformer.QuickGELU
LayerNorm = open_clip.transformer.LayerNorm
RANDOM_INIT_STD = 0.02  # CLIP4Clip's init for new Linear/Embedding weights (BERT's initializer_range)


def normalised_masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D): normalise frames, average the valid ones, normalise the mean."""
    frames = torch.where(mask.unsqueeze(-1), F.normalize(frames, dim=-1), 0.0)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(frames.dtype)
    return F.normalize(frames.sum(dim=1) / count, dim=-1)


def key_padding_bias(key_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, S) bool -> (N*heads, S, S) additive attention bias: -inf on padded keys, 0 elsewhere.

    nn.MultiheadAttention wants 3D masks batch-major ((n, h) at row n*heads + h), hence repeat_interleave.
    """
    bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=key_mask.device)
    bias = bias.masked_fill(~key_mask, float("-inf"))  # (N, S)
    length = key_mask.shape[1]
    return bias.unsqueeze(1).expand(-1, length, -1).repeat_interleave(heads, dim=0)


def clip_text_geometry(clip: open_clip.CLIP) -> tuple[int, int, type[nn.Module]]:
    """(width, heads, activation class) of CLIP's text transformer, which the heads' layers copy."""
    block = clip.transformer.resblocks[0]
    return clip.transformer.width, block.attn.num_heads, type(block.mlp.gelu)


def copy_clip_text_layers(transformer: open_clip.transformer.Transformer, clip: open_clip.CLIP) -> None:
    """Layer i <- CLIP text layer i ("cut from the beginning"); layers beyond CLIP's depth keep their init."""
    with torch.no_grad():
        for target, source in zip(transformer.resblocks, clip.transformer.resblocks, strict=False):
            target.load_state_dict(source.state_dict())


def _random_linear_init(module: nn.Linear | nn.Embedding) -> None:
    nn.init.normal_(module.weight, std=RANDOM_INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class MeanPHead(nn.Module):
    """Parameter-free: mean of the normalised frame features."""

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return frames

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return normalised_masked_mean(self.temporal(frames, mask), mask)


class SeqLSTMHead(MeanPHead):
    """1-layer LSTM over frames, residual: f'_t = LSTM(f)_t + f_t.

    Unidirectional and fed frames in order, so with frames padded at the end, outputs at real frames never
    see padding (CLIP4Clip packs the sequence for the same effect).
    """

    def __init__(self, width: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size=width, hidden_size=width, num_layers=1, batch_first=True)

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(frames)
        return output + frames


class SeqTransfHead(MeanPHead):
    """Frame position embeddings + transformer encoder over frames, residual: f' = Transf(f + P) + f."""

    def __init__(self, width: int, heads: int, layers: int, max_positions: int, act_layer: type[nn.Module]):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(max_positions, width)
        self.transformer = Transformer(width, layers, heads, act_layer=act_layer)
        self.heads = heads

    def init_from_clip(self, clip: open_clip.CLIP) -> None:
        with torch.no_grad():
            self.frame_position_embeddings.weight.copy_(clip.positional_embedding)
        copy_clip_text_layers(self.transformer, clip)

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = self.frame_position_embeddings.weight[: frames.shape[1]]  # (T, D)
        attn_bias = key_padding_bias(mask, self.heads).to(frames.dtype)
        return self.transformer(frames + positions, attn_mask=attn_bias) + frames


class CrossEmbeddings(nn.Module):
    """Position (and, for the paper's variant, type: 0 = text, 1 = frame) embeddings of the cross input."""

    def __init__(self, width: int, max_positions: int, with_types: bool):
        super().__init__()
        self.position_embeddings = nn.Embedding(max_positions, width)
        self.token_type_embeddings = nn.Embedding(2, width) if with_types else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = tokens + self.position_embeddings.weight[: tokens.shape[1]]
        if self.token_type_embeddings is not None:
            types = torch.ones(tokens.shape[1], dtype=torch.long, device=tokens.device)
            types[0] = 0  # the text token; frames follow
            embedded = embedded + self.token_type_embeddings(types)
        return embedded


class CrossPooler(nn.Module):
    """First Linear + activation on the text position's output (CLIP4Clip's variant normalises it first)."""

    def __init__(self, width: int, clip4clip_variant: bool):
        super().__init__()
        self.ln_pool = LayerNorm(width) if clip4clip_variant else None
        self.dense = nn.Linear(width, width)
        self.activation = QuickGELU() if clip4clip_variant else nn.ReLU()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        first = hidden[:, 0]
        if self.ln_pool is not None:
            first = self.ln_pool(first)
        return self.activation(self.dense(first))


class CrossEncoder(nn.Module):
    """Module tree of CLIP4Clip's CrossModel (`cross.*` keys): embeddings, transformer, pooler."""

    def __init__(self, width: int, heads: int, layers: int, max_positions: int, act_layer, variant: str):
        super().__init__()
        self.embeddings = CrossEmbeddings(width, max_positions, with_types=variant == "paper")
        self.transformer = Transformer(width, layers, heads, act_layer=act_layer)
        self.pooler = CrossPooler(width, clip4clip_variant=variant == "clip4clip")
        self.heads = heads

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        attn_bias = key_padding_bias(key_mask, self.heads).to(tokens.dtype)
        return self.pooler(self.transformer(self.embeddings(tokens), attn_mask=attn_bias))


class TightTransfHead(nn.Module):
    """Cross transformer over [text; frames] of each (text, video) pair, then a score.

    s(t, v) = Linear2(act(Linear1(U[0]))), U = Transf([t; f_1..f_T] + P + Type) (paper's eq.); keys of
    padded frames are masked. Inputs are the raw (unnormalised) CLIP features, as in CLIP4Clip.
    """

    PAIRS_PER_CHUNK = 4096  # (text, video) pairs per cross-encoder call: bounds activation memory

    def __init__(self, width: int, heads: int, layers: int, max_positions: int, act_layer, variant: str):
        super().__init__()
        self.cross = CrossEncoder(width, heads, layers, max_positions, act_layer, variant)
        self.similarity_dense = nn.Linear(width, 1)
        for module in (
            self.cross.embeddings.token_type_embeddings,
            self.cross.pooler.dense,
            self.similarity_dense,
        ):
            if module is not None:
                _random_linear_init(module)

    def init_from_clip(self, clip: open_clip.CLIP) -> None:
        with torch.no_grad():
            self.cross.embeddings.position_embeddings.weight.copy_(clip.positional_embedding)
        copy_clip_text_layers(self.cross.transformer, clip)

    def forward(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, D), (B, T, D), (B, T) -> scores (N, B)."""
        step = max(1, self.PAIRS_PER_CHUNK // frames.shape[0])
        return torch.cat([self._score_chunk(chunk, frames, mask) for chunk in text.split(step)], dim=0)

    def _score_chunk(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n_text, (n_video, n_frames, width) = text.shape[0], frames.shape
        text_tokens = text[:, None, None, :].expand(n_text, n_video, 1, width)
        frame_tokens = frames.unsqueeze(0).expand(n_text, -1, -1, -1)
        tokens = torch.cat([text_tokens, frame_tokens], dim=2).reshape(n_text * n_video, 1 + n_frames, width)
        text_valid = mask.new_ones(n_video, 1)
        key_mask = torch.cat([text_valid, mask], dim=1).repeat(n_text, 1)  # (N*B, 1+T), pair (i, j) at i*B+j
        pooled = self.cross(tokens, key_mask)
        return self.similarity_dense(pooled).view(n_text, n_video)


def build_head(config: CLIP4ClipConfig, clip: open_clip.CLIP) -> nn.Module:
    """The configured head, initialised from `clip` as in the paper."""
    width, heads, act_layer = clip_text_geometry(clip)
    embed_dim = clip.text_projection.shape[1]
    if config.head != "meanP" and width != embed_dim:
        raise ValueError(
            f"head {config.head!r} is initialised from CLIP's text layers (width {width}) but runs on "
            f"{embed_dim}-d features; pick a backbone whose text width equals its embedding size"
        )
    max_positions = clip.positional_embedding.shape[0]
    if config.head == "meanP":
        return MeanPHead()
    if config.head == "seqLSTM":
        return SeqLSTMHead(width)
    head: SeqTransfHead | TightTransfHead
    if config.head == "seqTransf":
        head = SeqTransfHead(width, heads, config.head_num_layers, max_positions, act_layer)
    else:
        layers = config.cross_num_hidden_layers
        head = TightTransfHead(width, heads, layers, max_positions, act_layer, config.tight_variant)
    head.init_from_clip(clip)
    return head
