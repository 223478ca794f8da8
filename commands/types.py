"""Click parameter types for what users type: bounded numbers, names and messages.

Each one calls fased.bounds, so an option and the library refuse a value with the same limit
and wording; click turns the refusal into `Error: Invalid value for '--opt': ...` (exit 2).
Durations, times, schedules and URLs stay strings here: fased.schedule, fased.timeparse and
the URL checks of fased.models and fased.tasks parse them with their context (the clock, the
zone, the provider kind) and the same bounds.
"""

from __future__ import annotations

import click

from fased import bounds
from fased.errors import UsageError


class _Bounded(click.ParamType):
    """Runs one fased.bounds validator; its UsageError becomes click's BadParameter."""

    def check(self, text: str):
        raise NotImplementedError

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a default, or a value a caller already converted
            value = str(value)
        try:
            return self.check(value)
        except UsageError as exc:
            self.fail(f"{exc.message} ({exc.hint})" if exc.hint else exc.message, param, ctx)


class Seconds(_Bounded, click.FloatRange):
    """Seconds within [low, high]; click's FloatRange only for --help, which shows the range
    (its own check lets NaN through)."""

    def __init__(self, low: float, high: float):
        click.FloatRange.__init__(self, min=low, max=high)

    def check(self, text: str) -> float:
        return float(bounds.parse_number(text, low=self.min, high=self.max, unit="seconds"))


class Count(_Bounded, click.IntRange):
    """A whole number within [low, high]; IntRange only for --help."""

    def __init__(self, low: int, high: int):
        click.IntRange.__init__(self, min=low, max=high)

    def check(self, text: str) -> int:
        return bounds.parse_count(text, low=self.min, high=self.max)


def count(low: int = 0, high: int = bounds.MAX_COUNT) -> Count:
    """A whole number of things (`-n`, `--max-turns`, `--position`)."""
    return Count(low, high)


def seconds(limits: tuple[float, float]) -> Seconds:
    """A number of seconds within one of the ranges in fased.bounds."""
    return Seconds(*limits)


class Name(_Bounded):
    """A name shown in tables: one line, no control characters, at most `limit` characters.
    A blank value passes unchanged: each command says what '' means (clear it, the default)."""

    name = "text"

    def __init__(self, what: str = "the name", limit: int = bounds.NAME_CHARS):
        self.what, self.limit = what, limit

    def check(self, text: str) -> str:
        if not text.strip():
            return text
        return bounds.check_name(text, self.what, self.limit)


class Message(_Bounded):
    """A chat or task message: at most MESSAGE_BYTES."""

    name = "text"

    def check(self, text: str) -> str:
        return bounds.check_message(text)
