"""One way to turn a job's typed config dataclass into a command line.

Nested component configs are flattened (`--fps`, not `--decode.fps`) so the commands read the
way users type them; field names must therefore be unique across a job's components.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import tyro

ConfigT = TypeVar("ConfigT")


def parse_config(config_type: type[ConfigT], argv: Sequence[str] | None = None) -> ConfigT:
    """Parse `argv` (default: sys.argv[1:]) into `config_type`; `--help` lists every field."""
    return tyro.cli(
        config_type,
        args=None if argv is None else list(argv),
        config=(tyro.conf.OmitArgPrefixes,),
    )
