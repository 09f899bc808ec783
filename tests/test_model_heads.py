"""Each similarity head against a hand-written reference of its formula (CLIP4Clip sec. 3.3).

The references run only on a video's real frames (no masks), in float64, with attention, layer norm,
LSTM and MLP written out from their definitions, so they check both the formula and the masking.
"""

from __future__ import annotations

import math

import pytest
import torch

from model.backbone import create_clip
from model.config import CLIP4ClipConfig
from model.heads import (
    MeanPHead,
    QuickGELU,
    SeqLSTMHead,
    SeqTransfHead,
    TightTransfHead,
    build_head,
    key_padding_bias,
    normalised_masked_mean,
)

WIDTH, HEADS = 8, 2


@pytest.fixture(scope="module")
def debug_clip():
    torch.manual_seed(0)
    return create_clip("debug", "", quick_gelu=True)


def make_frames(batch=3, frames=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, frames, WIDTH, generator=generator, dtype=torch.float64)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    for i, n in enumerate([frames, 2, 1][:batch]):
        mask[i, :n] = True
    return features, mask


def perturb_(module: torch.nn.Module, seed: int = 2) -> torch.nn.Module:
    """Moves every parameter away from its init (zero biases, unit norms) so all of them matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return module


# --- hand-written references ------------------------------------------------------------------------------


def ref_normalise(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True))


def ref_mean_pool(frames):
    """(n, D) real frames -> (D,): normalise each, average, normalise."""
    return ref_normalise(ref_normalise(frames).mean(0))


def ref_layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ref_quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def ref_attention(x, attn, heads):
    """Multi-head self-attention over (n, D) without masks."""
    n, width = x.shape
    q, k, v = (x @ attn.in_proj_weight.T + attn.in_proj_bias).split(width, dim=-1)
    head_dim = width // heads
    out = torch.zeros_like(x)
    for h in range(heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(head_dim)
        weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
        out[:, cols] = (weights / weights.sum(-1, keepdim=True)) @ v[:, cols]
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


def ref_block(x, block, heads):
    """CLIP's pre-LN residual block: x + Attn(LN1 x); then + MLP(LN2 x) with QuickGELU."""
    x = x + ref_attention(ref_layer_norm(x, block.ln_1.weight, block.ln_1.bias), block.attn, heads)
    hidden = (
        ref_layer_norm(x, block.ln_2.weight, block.ln_2.bias) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias
    )
    return x + ref_quick_gelu(hidden) @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias


def ref_transformer(x, transformer, heads):
    for block in transformer.resblocks:
        x = ref_block(x, block, heads)
    return x


def ref_lstm(frames, lstm):
    """PyTorch's LSTM equations (gate order i, f, g, o) over (n, D), zero initial state."""
    hidden = torch.zeros(lstm.hidden_size, dtype=frames.dtype)
    cell = torch.zeros_like(hidden)
    outputs = []
    for x in frames:
        gates = lstm.weight_ih_l0 @ x + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ hidden + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        outputs.append(hidden)
    return torch.stack(outputs)


# --- tests --------------------------------------------------------------------------------------------------


def test_normalised_masked_mean_and_meanp_match_reference():
    frames, mask = make_frames()
    expected = torch.stack([ref_mean_pool(frames[i][mask[i]]) for i in range(len(frames))])
    torch.testing.assert_close(normalised_masked_mean(frames, mask), expected)
    torch.testing.assert_close(MeanPHead()(frames, mask), expected)
    assert list(MeanPHead().parameters()) == []


def test_seq_lstm_matches_reference():
    head = perturb_(SeqLSTMHead(WIDTH).double())
    frames, mask = make_frames()
    expected = []
    for i in range(len(frames)):
        real = frames[i][mask[i]]
        expected.append(ref_mean_pool(ref_lstm(real, head.lstm) + real))  # residual
    torch.testing.assert_close(head(frames, mask), torch.stack(expected))


def test_seq_transf_matches_reference():
    head = perturb_(SeqTransfHead(WIDTH, HEADS, 2, max_positions=10, act_layer=QuickGELU)).double()
    frames, mask = make_frames()
    expected = []
    for i in range(len(frames)):
        real = frames[i][mask[i]]
        positions = head.frame_position_embeddings.weight[: len(real)]
        expected.append(ref_mean_pool(ref_transformer(real + positions, head.transformer, HEADS) + real))
    torch.testing.assert_close(head(frames, mask), torch.stack(expected))


@pytest.mark.parametrize("variant", ["paper", "clip4clip"])
def test_tight_transf_matches_reference(variant):
    head = TightTransfHead(WIDTH, HEADS, 2, max_positions=10, act_layer=QuickGELU, variant=variant)
    head = perturb_(head).double()
    frames, mask = make_frames()
    text = torch.randn(4, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = torch.empty(len(text), len(frames), dtype=torch.float64)
    for i in range(len(text)):
        for j in range(len(frames)):
            expected[i, j] = ref_tight_score(head, text[i], frames[j][mask[j]], variant)
    torch.testing.assert_close(head(text, frames, mask), expected)


def ref_tight_score(head, text, real_frames, variant):
    """s(t, v) = Linear2(act(Linear1(U[0]))), U = Transf([t; f] + P (+ type: 0 text, 1 frames))."""
    cross = head.cross
    tokens = torch.cat([text[None], real_frames])
    tokens = tokens + cross.embeddings.position_embeddings.weight[: len(tokens)]
    if variant == "paper":
        types = cross.embeddings.token_type_embeddings.weight
        tokens = tokens + torch.cat([types[:1], types[1:2].expand(len(real_frames), -1)])
    first = ref_transformer(tokens, cross.transformer, HEADS)[0]
    if variant == "clip4clip":
        first = ref_layer_norm(first, cross.pooler.ln_pool.weight, cross.pooler.ln_pool.bias)
    hidden = first @ cross.pooler.dense.weight.T + cross.pooler.dense.bias
    hidden = torch.relu(hidden) if variant == "paper" else ref_quick_gelu(hidden)
    return (hidden @ head.similarity_dense.weight.T + head.similarity_dense.bias)[0]


def test_key_padding_bias_is_batch_major_per_head():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    bias = key_padding_bias(mask, heads=2)
    assert bias.shape == (4, 3, 3)
    for n in range(2):
        for h in range(2):
            row = bias[n * 2 + h, 0]
            assert torch.equal(torch.isinf(row), ~mask[n])
            assert torch.all(row[mask[n]] == 0)


@pytest.mark.parametrize("head_name", ["seqTransf", "tightTransf"])
def test_heads_initialise_from_clip_text_tower(debug_clip, head_name):
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head=head_name, head_num_layers=3)
    head = build_head(config, debug_clip)
    if head_name == "seqTransf":
        positions, transformer = head.frame_position_embeddings.weight, head.transformer
    else:
        positions, transformer = head.cross.embeddings.position_embeddings.weight, head.cross.transformer
    torch.testing.assert_close(positions, debug_clip.positional_embedding, rtol=0, atol=0)
    clip_layers = debug_clip.transformer.resblocks
    for layer, clip_layer in zip(transformer.resblocks, clip_layers, strict=False):
        for (name, value), (_, clip_value) in zip(
            layer.state_dict().items(), clip_layer.state_dict().items(), strict=True
        ):
            assert torch.equal(value, clip_value), name
    assert type(transformer.resblocks[0].mlp.gelu) is type(clip_layers[0].mlp.gelu)


def test_tight_head_random_parts_follow_clip4clip_init(debug_clip):
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head="tightTransf")
    head = build_head(config, debug_clip)
    for linear in (head.cross.pooler.dense, head.similarity_dense):
        assert torch.all(linear.bias == 0)
        assert 0.01 < float(linear.weight.detach().std()) < 0.04  # N(0, 0.02)
    assert head.cross.embeddings.token_type_embeddings.weight.shape == (2, debug_clip.transformer.width)


def test_seq_lstm_head_is_one_layer_unidirectional(debug_clip):
    head = build_head(CLIP4ClipConfig(backbone="debug", pretrained="", head="seqLSTM"), debug_clip)
    assert head.lstm.num_layers == 1 and not head.lstm.bidirectional
    assert head.lstm.hidden_size == head.lstm.input_size == debug_clip.text_projection.shape[1]
