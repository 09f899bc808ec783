"""One way to turn a job's typed config dataclass into a command line.

Nested component configs are flattened (`--fps`, not `--decode.fps`) so the commands read the
way users type them; field names must therefore be unique across a job's components. A job may
also accept a short public spelling for a field (`--model` for `--backbone`) through `aliases`,
so library field names stay descriptive.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TypeVar

import tyro

ConfigT = TypeVar("ConfigT")


def parse_config(
    config_type: type[ConfigT], argv: Sequence[str] | None = None, *, aliases: Mapping[str, str] | None = None
) -> ConfigT:
    """Parse `argv` (default: sys.argv[1:]) into `config_type`; `--help` lists every field."""
    args = list(sys.argv[1:] if argv is None else argv)
    return tyro.cli(
        config_type,
        args=[_apply_alias(arg, aliases or {}) for arg in args],
        config=(tyro.conf.OmitArgPrefixes,),
        description=_alias_help(config_type, aliases or {}),
    )


def _apply_alias(arg: str, aliases: Mapping[str, str]) -> str:
    flag, equals, value = arg.partition("=")
    return f"{aliases[flag]}{equals}{value}" if flag in aliases else arg


def _alias_help(config_type: type, aliases: Mapping[str, str]) -> str:
    doc = (config_type.__doc__ or "").strip()
    spelled = ", ".join(f"{alias} = {flag}" for alias, flag in sorted(aliases.items()))
    return f"{doc}\n\nAliases: {spelled}" if spelled else doc
