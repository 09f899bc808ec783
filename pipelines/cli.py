"""One way to turn a job's typed config dataclass into a command line.

Nested component configs are flattened (`--fps`, not `--decode.fps`) so the commands read the
way users type them; field names must therefore be unique across a job's components. A job may
also accept a short public spelling for a field (`--model` for `--backbone`) through `aliases`,
so library field names stay descriptive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import NoReturn, TypeVar

import tyro

from pipelines.config_values import ConfigError, check_numeric_ranges, flag_of

ConfigT = TypeVar("ConfigT")


def parse_config(
    config_type: type[ConfigT], argv: Sequence[str] | None = None, *, aliases: Mapping[str, str] | None = None
) -> ConfigT:
    """Parse `argv` (default: sys.argv[1:]) into `config_type`; `--help` lists every field.

    A value that cannot work (out of its declared range, or refused by a config's own checks) ends the
    process with exit status 2 and one line on stderr that names the flag; nothing has started yet.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = _tyro_cli(config_type, [_apply_alias(arg, aliases or {}) for arg in args], aliases or {})
        check_numeric_ranges(config)
    except ConfigError as error:
        _exit_with(str(error))
    return config


def _tyro_cli(config_type: type[ConfigT], args: list[str], aliases: Mapping[str, str]) -> ConfigT:
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(
                config_type,
                args=args,
                config=(tyro.conf.OmitArgPrefixes,),
                description=_alias_help(config_type, aliases),
            )
    except SystemExit:
        message = _value_error_message(captured.getvalue())
        if message is None:  # usage errors (unknown flag, bad type): tyro's own text says it best
            sys.stderr.write(captured.getvalue())
            raise
        _exit_with(_with_flag_names(message, _field_names(config_type)))


def _exit_with(message: str) -> NoReturn:
    print(f"error: {message} (see --help)", file=sys.stderr)
    raise SystemExit(2)


def _value_error_message(tyro_output: str) -> str | None:
    """The message of tyro's "Value error" report (a config's own check refused a value), in either of the
    shapes tyro draws it (a box on a terminal, dashes elsewhere)."""
    match = re.search(r"Error parsing [\w.-]+: (.*?)For full helptext", tyro_output, flags=re.DOTALL)
    if "Value error" not in tyro_output or not match:
        return None
    return " ".join(re.sub(r"[─-]{3,}|[│|]", " ", match.group(1)).split())


def _with_flag_names(message: str, field_names: set[str]) -> str:
    """`max_steps must be >= 1` -> `--max-steps must be >= 1`: the user typed flags, not field names."""

    def flag(match: re.Match) -> str:
        word = match.group(0)
        return flag_of(word) if word in field_names and ("_" in word or match.start() == 0) else word

    return re.sub(r"(?<![-\w])[a-z][a-z0-9_]*", flag, message)


def _field_names(config_type: type) -> set[str]:
    names: set[str] = set()
    for field in dataclasses.fields(config_type):
        names.add(field.name)
        hint = typing.get_type_hints(config_type).get(field.name)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            names |= _field_names(hint)
    return names


def _apply_alias(arg: str, aliases: Mapping[str, str]) -> str:
    flag, equals, value = arg.partition("=")
    return f"{aliases[flag]}{equals}{value}" if flag in aliases else arg


def _alias_help(config_type: type, aliases: Mapping[str, str]) -> str:
    doc = (config_type.__doc__ or "").strip()
    spelled = ", ".join(f"{alias} = {flag}" for alias, flag in sorted(aliases.items()))
    return f"{doc}\n\nAliases: {spelled}" if spelled else doc
