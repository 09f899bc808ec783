"""The model side of the embedding job: which model (a committed checkpoint, plain CLIP, or an export) and
how a part's items become L2-normalised embeddings, with a reason for each item that could not be embedded.

tightTransf is refused: it is a cross-encoder that scores (text, video) pairs jointly, so it has no
standalone video or text embedding to store and search. Embed with a meanP / seqLSTM / seqTransf checkpoint,
or pass `--head meanP` to embed with this checkpoint's CLIP weights under a mean-pooling head.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.clip4clip import CLIP4Clip
from model.formats import load_model
from pipelines.checkpoint.exports import safetensors_export_file
from pipelines.checkpoint.init_model import InitConfig, load_init_model
from pipelines.embedding.inputs import EmbedItem, Part
from pipelines.embedding.output import ItemOutcome
from pipelines.finetuning.data import ClipTensorConfig, frames_tensor, video_batches
from pipelines.finetuning.datasets.base import RetrievalItem
from pipelines.finetuning.evaluate import encode_texts, encode_videos
from pipelines.finetuning.frame_cache import FrameCache, uniform_frame_indices
from pipelines.storage import Storage

TIGHT_REFUSAL = (
    "tightTransf is a cross-encoder: it scores each (text, video) pair jointly and has no standalone video or "
    "text embedding to store and search. Embed with a meanP, seqLSTM or seqTransf checkpoint, or pass "
    "--head meanP to embed with this checkpoint's CLIP weights under a mean-pooling head"
)
NEW_HEAD_SEED = 0  # a head the checkpoint lacks gets random layers: drawn under this seed on every worker


def load_embedding_model(config: InitConfig) -> tuple[CLIP4Clip, dict]:
    """(model in eval mode, identity: what it is, enough to tell two models apart)."""
    export = safetensors_export_file(config.init)
    if export is not None:
        model = load_model(export)
        if config.head and config.head != model.config.head:
            raise ValueError(
                f"the export {config.init} has head {model.config.head}; it cannot change (--head)"
            )
        identity = {"init": config.init, "export": True, "weights_sha256": _sha256(export)}
    else:
        torch.manual_seed(NEW_HEAD_SEED)
        init = load_init_model(config)
        model, identity = init.model, dict(init.identity)
    if model.is_tight:
        raise ValueError(TIGHT_REFUSAL)
    identity["config"] = model.config.to_dict()
    return model.eval(), identity


def embed_texts(model: CLIP4Clip, items: Sequence[EmbedItem], *, batch_size: int, device: torch.device):
    features = encode_texts(model, [item.text for item in items], batch_size=batch_size, device=device)
    return list(zip(items, features.numpy(), strict=True)), [
        ItemOutcome(id=item.id, kind=item.kind, status="ok") for item in items
    ]


def embed_video_files(
    model: CLIP4Clip, items: Sequence[EmbedItem], cache: FrameCache, *, batch_size: int, device: torch.device
):
    """Decodes through the fine-tuning frame cache (the sharding job's decoder); failures keep its reason."""
    retrieval = [RetrievalItem(video_id=i.id, path=Path(i.source), captions=("",)) for i in items]
    kept, skipped = cache.fill(retrieval)
    reasons = {s.video_id: s.reason for s in skipped}
    batches = video_batches(kept, cache, _clip(model), batch_size=batch_size, loader_workers=0)
    features = encode_videos(model, batches, device=device)[0] if kept else torch.zeros(0)
    by_id = dict(zip((k.video_id for k in kept), features.numpy(), strict=True))
    return _outcomes(items, by_id, reasons, detail="")


def embed_shard_videos(
    model: CLIP4Clip, items: Sequence[EmbedItem], shards: Storage, *, batch_size: int, device: torch.device
):
    """Frames straight from the shard's tar (the sampled JPEGs of each video, as the sharding job wrote them)."""
    try:
        jpegs_by_key = _shard_jpegs(shards.read_bytes(items[0].source))
    except (OSError, tarfile.TarError) as error:
        return _outcomes(items, {}, {i.id: "unreadable_shard" for i in items}, detail=str(error))
    clip = _clip(model)
    present = [item for item in items if jpegs_by_key.get(item.sample_key)]
    tensors = [
        frames_tensor(_uniform(jpegs_by_key[item.sample_key], clip.max_frames), clip) for item in present
    ]
    batches = [
        {"video": torch.stack([v for v, _ in tensors[s : s + batch_size]]),
         "video_mask": torch.stack([m for _, m in tensors[s : s + batch_size]])}
        for s in range(0, len(tensors), batch_size)
    ]  # fmt: skip
    features = encode_videos(model, batches, device=device)[0] if batches else torch.zeros(0)
    by_id = dict(zip((item.id for item in present), features.numpy(), strict=True))
    return _outcomes(items, by_id, {i.id: "no_frames_in_shard" for i in items if i not in present}, detail="")


def embed_part(
    model: CLIP4Clip, part: Part, *, cache: FrameCache, shards: Storage | None, batch_size: int, device
):
    kind = part.items[0].kind
    if kind == "text":
        return embed_texts(model, part.items, batch_size=batch_size, device=device)
    if kind == "shard_video":
        assert shards is not None
        return embed_shard_videos(model, part.items, shards, batch_size=batch_size, device=device)
    return embed_video_files(model, part.items, cache, batch_size=batch_size, device=device)


def _outcomes(
    items: Sequence[EmbedItem], by_id: dict[str, np.ndarray], reasons: dict[str, str], *, detail: str
):
    embedded = [(item, by_id[item.id]) for item in items if item.id in by_id]
    outcomes = [
        ItemOutcome(id=item.id, kind=item.kind, status="ok")
        if item.id in by_id
        else ItemOutcome(
            id=item.id, kind=item.kind, status="failed", reason=reasons.get(item.id, "unknown"), detail=detail
        )
        for item in items
    ]
    return embedded, outcomes


def _clip(model: CLIP4Clip) -> ClipTensorConfig:
    return ClipTensorConfig(max_frames=model.config.max_frames, image_size=model.image_size)


def _uniform(jpegs: list[bytes], max_frames: int) -> list[bytes]:
    return [jpegs[i] for i in uniform_frame_indices(len(jpegs), max_frames)]


def _shard_jpegs(tar_bytes: bytes) -> dict[str, list[bytes]]:
    """sample key -> its frames in time order (members `<key>.000012.jpg`)."""
    frames: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                key, index = member.name[: -len(".jpg")].rsplit(".", 1)
                handle = tar.extractfile(member)
                assert handle is not None
                frames.setdefault(key, []).append((index, handle.read()))
    return {key: [data for _, data in sorted(items)] for key, items in frames.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
