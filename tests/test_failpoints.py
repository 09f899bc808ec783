"""Failpoints pause only where and when asked."""

from __future__ import annotations

import time

from pipelines import failpoints


def timed(name: str) -> float:
    started = time.monotonic()
    failpoints.failpoint(name)
    return time.monotonic() - started


def test_unset_is_a_no_op(monkeypatch):
    monkeypatch.delenv(failpoints.ENV_VAR, raising=False)
    assert timed("anything") < 0.05


def test_pauses_on_the_named_point_and_chosen_hit(monkeypatch):
    monkeypatch.setenv(failpoints.ENV_VAR, "other=5,here=0.3@2")
    monkeypatch.setattr(failpoints, "_hits", failpoints.Counter())
    assert timed("here") < 0.2  # first hit: no pause
    assert timed("here") >= 0.3  # second hit pauses
    assert timed("here") < 0.2
    assert failpoints.failpoint_runtime_env() == {"env_vars": {failpoints.ENV_VAR: "other=5,here=0.3@2"}}
