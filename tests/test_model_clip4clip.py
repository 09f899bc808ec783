"""CLIP4Clip model: shapes, masks, agreement with open_clip's own encoders, gradients, parameter groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.clip4clip import CLIP4Clip, check_frame_mask
from model.config import CLIP4ClipConfig
from model.losses import MILNCELoss, SymmetricCrossEntropyLoss, symmetric_cross_entropy
from model.openclip_import import open_clip

HEADS = ["meanP", "seqLSTM", "seqTransf", "tightTransf"]
PATCHES = ["2d", "3d"]
CAPTIONS = ["a man slices onions", "pour the batter into the pan", "tighten the bolts"]


def debug_model(head="meanP", patch="2d", seed=0, **overrides) -> CLIP4Clip:
    torch.manual_seed(seed)
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head=head, patch=patch, **overrides)
    return CLIP4Clip.from_config(config).eval()


def clips(batch=3, frames=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, frames, 3, 64, 64, generator=generator)
    lengths = [frames, 3, 1][:batch]
    mask = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    return video, mask, lengths


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("head", HEADS)
def test_output_shapes_and_normalisation(head, patch):
    model = debug_model(head, patch)
    video, mask, _ = clips()
    tokens = model.tokenizer()(CAPTIONS + ["one more"])
    out = model(video, mask, tokens)
    assert out["logit_scale"].shape == ()
    torch.testing.assert_close(out["logit_scale"], model.clip.logit_scale.exp())
    if head == "tightTransf":
        assert out["scores"].shape == (4, 3)
        assert out["text"].shape == (4, 64) and out["video"].shape == (3, 6, 64)
    else:
        assert out["video"].shape == (3, 64) and out["text"].shape == (4, 64)
        for features in (out["video"], out["text"]):
            torch.testing.assert_close(features.norm(dim=-1), torch.ones(len(features)))


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("head", HEADS)
def test_padded_frames_change_nothing(head, patch):
    """Padding content is irrelevant, and a padded clip equals the same clip cut to its real frames."""
    model = debug_model(head, patch)
    video, mask, lengths = clips()
    tokens = model.tokenizer()(CAPTIONS)
    reference = model(video, mask, tokens)
    noisy = video.clone()
    noisy[~mask] = 100 * torch.randn_like(noisy[~mask])
    for key, value in model(noisy, mask, tokens).items():
        torch.testing.assert_close(value, reference[key], msg=key)
    for i, n in enumerate(lengths):
        cut = model(video[i : i + 1, :n], mask[i : i + 1, :n], tokens)
        if head == "tightTransf":
            torch.testing.assert_close(cut["scores"][:, 0], reference["scores"][:, i])
        else:
            torch.testing.assert_close(cut["video"][0], reference["video"][i])


def test_video_of_text_stacks_keeps_leading_dims():
    model = debug_model()
    tokens = model.tokenizer()(CAPTIONS * 2).reshape(3, 2, -1)  # (B, K, L): K candidates per clip
    text = model.encode_text(tokens)
    assert text.shape == (3, 2, 64)
    torch.testing.assert_close(text.reshape(6, 64), model.encode_text(tokens.reshape(6, -1)))


def test_encoders_agree_with_open_clip():
    """Per-frame features = open_clip's encode_image; text with L = max_words tokens = open_clip's
    encode_text on the same tokens padded to 77 (causal attention: padding after EOT is invisible)."""
    model = debug_model()
    video, mask, _ = clips(batch=1, frames=4)
    torch.testing.assert_close(model.encode_frames(video, mask)[0], model.clip.encode_image(video[0]))
    tokens = model.tokenizer()(CAPTIONS)
    assert tokens.shape == (3, model.config.max_words)
    padded = F.pad(tokens, (0, 77 - tokens.shape[1]))
    torch.testing.assert_close(model.encode_text(tokens), model.clip.encode_text(padded, normalize=True))


def test_tokenizer_truncates_to_max_words_keeping_eot_last():
    model = debug_model(max_words=8)
    tokens = model.tokenizer()(["one two three four five six seven eight nine ten eleven"])
    assert tokens.shape == (1, 8)
    assert int(tokens[0].argmax()) == 7  # EOT (the largest id) closes the truncated caption


def test_image_size_normalisation_and_embed_dim():
    model = debug_model()
    assert model.image_size == 64 and model.embed_dim == 64
    mean, std = model.image_mean_std
    assert mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN) and std == pytest.approx(
        open_clip.OPENAI_DATASET_STD
    )


def test_score_pairs_only_for_tight_head():
    model = debug_model("meanP")
    video, mask, _ = clips()
    with pytest.raises(ValueError, match="tightTransf"):
        model.score_pairs(torch.zeros(2, 64), torch.zeros(3, 6, 64), mask)
    tight = debug_model("tightTransf")
    text = tight.encode_text(tight.tokenizer()(CAPTIONS), normalize=False)
    scores = tight.score_pairs(text, tight.encode_video(video, mask), mask)
    torch.testing.assert_close(scores, tight(video, mask, tight.tokenizer()(CAPTIONS))["scores"])


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("head", HEADS)
def test_gradients_reach_every_trained_parameter(head, patch):
    model = debug_model(head, patch).train()
    video, mask, _ = clips()
    out = model(video, mask, model.tokenizer()(CAPTIONS))
    if head == "tightTransf":
        loss = symmetric_cross_entropy(out["scores"])
    else:
        loss = SymmetricCrossEntropyLoss()(out["video"], out["text"], out["logit_scale"])
    loss.backward()
    unused = {"clip.visual.conv1.weight"} if patch == "3d" else set()  # replaced by the 3D embedding
    if head == "tightTransf":
        unused.add("clip.logit_scale")  # pair scores are not scaled dot products
    for name, param in model.named_parameters():
        if name in unused:
            assert not param.requires_grad and param.grad is None, (
                name
            )  # frozen: DDP needs no unused-param search
            continue
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_mil_nce_trains_through_forward_with_candidates():
    model = debug_model("seqTransf").train()
    video, mask, _ = clips()
    tokens = model.tokenizer()(CAPTIONS * 2).reshape(3, 2, -1)
    out = model(video, mask, tokens)
    loss = MILNCELoss()(out["video"], out["text"], out["logit_scale"])
    loss.backward()
    assert model.head.frame_position_embeddings.weight.grad.abs().sum() > 0


def test_param_groups_split_clip_and_new_weights():
    model = debug_model("seqTransf", "3d")
    groups = model.param_groups(lr=1e-4, coef_lr=1e-3, weight_decay=0.2)
    by_name = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert "clip.visual.conv1.weight" not in by_name  # unused (and frozen) in a 3D model
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in by_name.values())  # each trainable one exactly once
    group_of = {id(p): g for g in groups for p in g["params"]}
    for name, param in by_name.items():
        group = group_of[id(param)]
        expected_lr = 1e-4 if name.startswith("head.") else 1e-4 * 1e-3
        assert group["lr"] == pytest.approx(expected_lr), name
        no_decay = param.ndim < 2 or "embedding" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.2), name
    names_without_decay = {n for n, p in by_name.items() if group_of[id(p)]["weight_decay"] == 0}
    for name in (
        "clip.logit_scale",
        "clip.token_embedding.weight",
        "clip.visual.class_embedding",
        "clip.ln_final.weight",
        "head.frame_position_embeddings.weight",
        "head.transformer.resblocks.0.attn.in_proj_bias",
    ):
        assert name in names_without_decay
    assert group_of[id(by_name["patch3d.conv.weight"])]["lr"] == pytest.approx(1e-7)
    optimizer = torch.optim.AdamW(groups)  # groups are valid optimizer input
    assert len(optimizer.param_groups) == len(groups) == 4


def test_param_groups_skip_frozen_parameters():
    model = debug_model()
    model.clip.visual.requires_grad_(False)
    grouped = {id(p) for g in model.param_groups(1.0, 0.1, 0.0) for p in g["params"]}
    assert all(id(p) not in grouped for p in model.clip.visual.parameters())


def test_frame_mask_must_be_real_frames_then_padding():
    assert check_frame_mask(torch.tensor([[1, 1, 0], [1, 0, 0]])).dtype == torch.bool
    for bad in ([[0, 1, 1]], [[1, 0, 1]], [[0, 0, 0]]):
        with pytest.raises(ValueError, match="real frames followed by padding"):
            check_frame_mask(torch.tensor(bad))


def test_bad_inputs_are_rejected_with_shapes():
    model = debug_model(max_frames=4)
    tokens = model.tokenizer()(CAPTIONS)
    with pytest.raises(ValueError, match=r"\(B, T, 3, 64, 64\)"):
        model(torch.zeros(2, 4, 3, 32, 32), torch.ones(2, 4), tokens)
    with pytest.raises(ValueError, match="max_frames=4"):
        model(torch.zeros(2, 5, 3, 64, 64), torch.ones(2, 5), tokens)
    with pytest.raises(ValueError, match="mask must be"):
        model(torch.zeros(2, 4, 3, 64, 64), torch.ones(2, 3), tokens)
    with pytest.raises(ValueError, match="tokenizer"):
        model.encode_text(torch.zeros(2, 78, dtype=torch.long))


def test_vit_b_sizes_by_name():
    """The real backbones (random init here; weights cannot be downloaded in tests)."""
    torch.manual_seed(0)
    b32 = CLIP4Clip.from_config(
        CLIP4ClipConfig(backbone="ViT-B-32", pretrained="", head="seqTransf", patch="3d")
    )
    assert b32.image_size == 224 and b32.embed_dim == 512
    assert b32.clip.visual.conv1.kernel_size == (32, 32)
    assert b32.patch3d.conv.weight.shape == (768, 3, 3, 32, 32)
    assert len(b32.head.transformer.resblocks) == 4
    assert type(b32.clip.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # OpenAI CLIP
    del b32
    b16 = CLIP4Clip.from_config(CLIP4ClipConfig(backbone="ViT-B-16", pretrained=""))
    assert b16.image_size == 224 and b16.clip.visual.conv1.kernel_size == (16, 16)


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)  # two processes share a small CI machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        finished = []
        for head, patch in [("seqLSTM", "2d"), ("seqTransf", "3d"), ("tightTransf", "3d")]:
            model = debug_model(head, patch).train()
            ddp = DistributedDataParallel(
                model
            )  # find_unused_parameters=False: every trainable weight is used
            optimizer = torch.optim.SGD(model.param_groups(lr=0.1, coef_lr=0.1, weight_decay=0.0))
            video, mask, _ = clips(seed=rank)
            tokens = model.tokenizer()(CAPTIONS * 2).reshape(3, 2, -1)
            for _ in range(2):  # DDP reports unused parameters at the second step
                out = ddp(video, mask, tokens if head != "tightTransf" else tokens[:, 0])
                if head == "tightTransf":
                    loss = symmetric_cross_entropy(out["scores"])
                else:
                    loss = MILNCELoss(rank, 2)(out["video"], out["text"], out["logit_scale"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            finished.append(head)
        torch.save({"finished": len(finished)}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_trains_every_head_without_unused_parameters(tmp_path):
    """2 processes on gloo, DDP without find_unused_parameters, two steps (meanP is covered by the others)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)["finished"] == 3
