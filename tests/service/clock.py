"""An injectable clock for the service tier: every "now" a service reads comes from one `Clock`.

The services read the time as `datetime.now(UTC)` (approvals, issuer, the
evidence verifier, envelopes, audit events, proof checks, the broker's key ring,
chat) and as `time.time()` (the broker's verifier, chat's Slack timestamp
check). None of them takes a clock argument yet, so `install` replaces the
module-level name `datetime` in exactly the modules listed in `CLOCKED_MODULES`
with `ClockedDatetime`, whose `now()` asks the clock, and the name `time` in
`CLOCKED_TIME_MODULES` with `ClockedTime`. `ClockedDatetime` is still the real class for everything else
(construction, `fromtimestamp`, `isinstance` checks against it). The verifier
and the revocation list take the clock as an argument (`ClockedVerifier`,
`RevocationList(clock=...)`).

A test moves time only with `advance`: nothing sleeps, and a deadline is reached
by advancing past it and ticking.
"""

from __future__ import annotations

import importlib
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, ClassVar, Self

import pytest

__all__ = ["CLOCKED_MODULES", "CLOCKED_TIME_MODULES", "Clock", "ClockedDatetime", "ClockedTime", "install"]

CLOCKED_MODULES = (
    "approvals.service",
    "issuer.service",
    "issuer.adapters.evidence",
    "broker.service",
    "broker.adapters.keys",
    "atb_runtime.records",
    "contracts.envelope",
    "atb_runtime.proofs",
    "chat.service",
    "gateway.service",
    "audit_sink.service",
)
"""Every module whose `datetime.now(UTC)` a service's decisions or outputs depend on."""

CLOCKED_TIME_MODULES = ("chat.service",)
"""Modules whose `time.time()` (the Slack request timestamp check) is the clock's."""


class Clock:
    """The time every clocked module sees: starts at `start` (whole seconds), moves only with `advance`."""

    def __init__(self, start: datetime | None = None) -> None:
        begin = start if start is not None else datetime.now(UTC)
        if begin.tzinfo is None:
            raise ValueError("a clock starts at an aware time")
        self._now = begin.astimezone(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        """Seconds since the epoch, as `time.time()`."""
        return self._now.timestamp()

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("time does not run backwards here")
        self._now += timedelta(seconds=seconds)
        return self._now


class _SameClass(type):
    """`isinstance(x, ClockedDatetime)` answers as `isinstance(x, datetime)`: real values pass checks."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, datetime)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, datetime)


class ClockedDatetime(datetime, metaclass=_SameClass):
    """`datetime` whose `now()` (and `utcnow()`) is the installed clock's; everything else is inherited."""

    clock: ClassVar[Clock | None] = None

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        clock = ClockedDatetime.clock
        if clock is None:
            raise RuntimeError("no clock installed")
        moment = clock.now()
        plain: Self = _plain(moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None))
        return plain

    @classmethod
    def fromtimestamp(cls, t: float, tz: tzinfo | None = None) -> Self:
        plain: Self = _plain(datetime.fromtimestamp(t, tz))
        return plain


def _plain(value: datetime) -> Any:
    """A real `datetime` (values never carry the patched class out of the module that made them)."""
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.tzinfo,
        fold=value.fold,
    )


class ClockedTime:
    """The `time` module with `time()` from the clock; everything else (monotonic, perf_counter) is the real one."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def install(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Clock:
    """Make every module of `CLOCKED_MODULES` and `CLOCKED_TIME_MODULES` read `clock`; undone with the monkeypatch."""
    monkeypatch.setattr(ClockedDatetime, "clock", clock)
    for name in CLOCKED_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "datetime", None) is not datetime:
            raise AssertionError(f"{name} no longer imports datetime by name: update tests/service/clock.py")
        monkeypatch.setattr(module, "datetime", ClockedDatetime)
    for name in CLOCKED_TIME_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "time", None) is not time:
            raise AssertionError(f"{name} no longer imports the time module: update tests/service/clock.py")
        monkeypatch.setattr(module, "time", ClockedTime(clock))
    return clock
