"""Fixtures: generated media — a HowTo100M-style sample collection and a factory of small real videos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from infra.sample_collection import (
    SampleCollection,
    VideoRecipe,
    generate_sample_collection,
    segments_between,
    write_video,
)

DEFAULT_COLOURS = ("red", "green", "blue", "yellow", "white", "magenta", "cyan")


@pytest.fixture(scope="session")
def sample_collection(tmp_path_factory: pytest.TempPathFactory) -> SampleCollection:
    """The default collection, generated once per session (a few seconds).

    It contains a FIFO (the "timeout" case): decode it with a small `DecodeConfig.timeout_s` (2 s), and never
    copy, tar or upload its `videos/` folder with a tool that opens every file.
    """
    return generate_sample_collection(tmp_path_factory.mktemp("howto100m") / "collection")


def colour_boundaries(num_colours: int) -> list[float]:
    """Colour k is on screen during [k - 0.75, k + 0.25) (clipped to [0, num_colours)).

    So the frame sampled at t = k shows colour k only if it was taken within 0.25 s after or 0.75 s
    before t = k: a sampler reading the frame at t + 0.5 (ffmpeg fps's default rounding) sees colour k + 1.
    """
    return [0.0, *(k + 0.25 for k in range(num_colours - 1)), float(num_colours)]


def colour_on_screen(colours: Sequence[str], time_s: float) -> str:
    """The colour `make_video(colours)` shows at `time_s` (see `colour_boundaries`)."""
    index = int(time_s + 0.75)  # k - 0.75 <= t < k + 0.25  <=>  k = floor(t + 0.75)
    return colours[min(max(index, 0), len(colours) - 1)]


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_video(colours, name=..., **VideoRecipe fields)` -> path of a real encoded video.

    By default colour k of `colours` is on screen around t = k (see `colour_boundaries`), one colour per
    second, so the video lasts len(colours) seconds. `boundaries_s` overrides the timing.
    """

    def make(
        colours: Sequence[str] = DEFAULT_COLOURS,
        *,
        name: str = "clip",
        boundaries_s: Sequence[float] | None = None,
        **recipe_fields: object,
    ) -> Path:
        boundaries = list(boundaries_s) if boundaries_s is not None else colour_boundaries(len(colours))
        recipe = VideoRecipe(segments=segments_between(colours, boundaries), **recipe_fields)  # type: ignore[arg-type]
        path = tmp_path / f"{name}.{recipe.container}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(recipe, path)
        return path

    return make
