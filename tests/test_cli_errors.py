"""A new user's mistakes get one line on stderr that names the flag and the fix, exit status 2, and no
traceback: every numeric option of every job, and the mistakes seen in the field (issue 17)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from jobs.export_checkpoint import main as export_main
from jobs.finetune_retrieval import main as finetune_main
from jobs.post_pretrain import main as post_pretrain_main
from pipelines.capacity import CapacityConfig
from pipelines.checkpoint.exports import ExportConfig
from pipelines.cli import parse_config
from pipelines.config_values import flag_of
from pipelines.embedding.job import EmbedConfig
from pipelines.finetuning.finetune import FinetuneConfig
from pipelines.sharding.contact_sheet import ContactSheetConfig
from pipelines.sharding.job import ShardingConfig
from pipelines.training.post_pretrain import PostPretrainConfig

JOB_CONFIGS = [
    ShardingConfig, PostPretrainConfig, FinetuneConfig, ExportConfig, EmbedConfig, CapacityConfig,
    ContactSheetConfig,
]  # fmt: skip


def _leaf_fields(config_type: type) -> list[tuple[str, typing.Any, bool]]:
    """(name, type, required) of every leaf field, nested configs flattened as the CLI flattens them."""
    hints = typing.get_type_hints(config_type)
    leaves = []
    for field in dataclasses.fields(config_type):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            leaves += _leaf_fields(hint)
        else:
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            leaves.append((field.name, hint, required))
    return leaves


def _required_args(config_type: type) -> list[str]:
    return [
        arg for name, _, required in _leaf_fields(config_type) if required for arg in (flag_of(name), "x")
    ]


def _numeric_flags(config_type: type) -> list[str]:
    return [flag_of(name) for name, hint, _ in _leaf_fields(config_type) if hint in (int, float)]


@pytest.mark.parametrize("config_type", JOB_CONFIGS, ids=lambda t: t.__name__)
def test_every_numeric_option_refuses_a_negative_value_in_one_line(config_type, capsys):
    flags = _numeric_flags(config_type)
    assert flags, "every job has numeric options"
    for flag in flags:
        with pytest.raises(SystemExit) as exit_info:
            parse_config(config_type, [*_required_args(config_type), flag, "-1"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, flag
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and flag in err, (flag, err)


def test_zero_videos_per_shard_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse_config(ShardingConfig, [*_required_args(ShardingConfig), "--videos-per-shard", "0"])
    assert capsys.readouterr().err.strip() == "error: --videos-per-shard must be >= 1, got 0 (see --help)"


def test_a_config_check_is_reported_by_its_flag_not_its_field(capsys):
    with pytest.raises(SystemExit):
        parse_config(ShardingConfig, [*_required_args(ShardingConfig), "--jpeg-quality", "40"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--jpeg-quality" in err and "2..31" in err


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("library log:")]
    assert len(err) == 1, err
    return err[0]


def test_post_pretrain_on_an_empty_shards_folder_is_refused_before_ray_starts(tmp_path, capsys):
    empty = tmp_path / "not-shards"
    empty.mkdir()
    args = ["--shards", str(empty), "--checkpoints", str(tmp_path / "runs"), "--run-name", "r"]
    assert post_pretrain_main([*args, "--model", "debug", "--pretrained", ""]) == 2
    line = _one_line_error(capsys)
    assert "--shards" in line and "StreamConfig" not in line and "jobs/shard_howto100m.py" in line


def test_finetune_with_a_wrong_data_root_is_refused_before_a_model_is_built(tmp_path, capsys):
    args = ["--init", "openai", "--dataset", "msrvtt", "--data-root", str(tmp_path), "--zero-shot"]
    assert finetune_main(args, use_ray=False) == 2
    line = _one_line_error(capsys)
    assert "--data-root" in line and "MSRVTT_JSFUSION_test.csv" in line


def test_a_missing_checkpoint_does_not_suggest_a_latest_that_is_missing_too(tmp_path, capsys):
    missing = tmp_path / "runs" / "no-such-run" / "step-00000040"
    assert export_main(["--init", str(missing), "--out", str(tmp_path / "export")]) == 2
    line = _one_line_error(capsys)
    assert "no committed checkpoint at all" in line and "/latest" not in line


def test_init_openai_with_the_debug_backbone_names_flags_of_the_job(tmp_path, capsys):
    assert export_main(["--init", "openai", "--backbone", "debug", "--out", str(tmp_path / "e")]) == 2
    line = _one_line_error(capsys)
    assert "--init" in line and "pretrained=''" not in line


def test_finetune_loop_flags_keep_their_spelling_now_that_the_loop_config_is_nested():
    config = parse_config(
        FinetuneConfig,
        ["--init", "openai", "--grad-accum", "2", "--log-every", "5", "--seed", "7", "--precision", "fp32"],
    )
    assert (config.loop.grad_accum, config.loop.log_every, config.loop.seed, config.loop.precision) == (
        2, 5, 7, "fp32",
    )  # fmt: skip


def test_finetune_refuses_max_steps_and_names_epochs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(FinetuneConfig, ["--init", "openai", "--max-steps", "50"])
    err = _one_line_error(capsys)
    assert exit_info.value.code == 2 and "--max-steps" in err and "--epochs" in err, err
