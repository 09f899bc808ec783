"""Allowed ranges of numeric config fields, declared where the field is: `videos_per_shard: PositiveInt`.

No option of this project takes a negative number, so an undeclared int or float field must be >= 0 (where
0 means "off" or "auto", its comment says so); `PositiveInt`, `PositiveFloat` and `Fraction` narrow that.
`pipelines.cli` checks every numeric field of a parsed config against its range and answers a bad value
with one line naming the flag (`--videos-per-shard must be >= 1, got 0`), before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any


class ConfigError(Exception):
    """A value the user passed that cannot work; the message names the flag and what would work."""


@dataclass(frozen=True)
class Range:
    low: float = 0.0
    low_open: bool = False  # True: the value must be > low; False: >= low
    high: float = math.inf

    def problem(self, value: float) -> str | None:
        if math.isnan(value):
            return "must be a number"
        if self.low_open and not value > self.low:
            return f"must be > {self.low:g}"
        if value < self.low:
            return f"must be >= {self.low:g}"
        if value > self.high:
            return f"must be <= {self.high:g}"
        return None


PositiveInt = Annotated[int, Range(low=1)]
PositiveFloat = Annotated[float, Range(low=0.0, low_open=True)]
Fraction = Annotated[float, Range(low=0.0, high=1.0)]
_DEFAULT_RANGE = Range()


def flag_of(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def check_numeric_ranges(config: Any) -> None:
    """Raises ConfigError for the first numeric field (nested configs included) outside its range."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_numeric_ranges(value)
            continue
        allowed = _range_of(hints[field.name])
        if allowed is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        problem = allowed.problem(value)
        if problem:
            raise ConfigError(f"{flag_of(field.name)} {problem}, got {value:g}")


def _range_of(hint: Any) -> Range | None:
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Range)), _DEFAULT_RANGE)
    return _DEFAULT_RANGE if hint in (int, float) else None
