"""Settings read from the environment: a value fased cannot read is an error naming the
variable, never a silent default or a silent yes."""

from __future__ import annotations

import pytest

from fased.errors import UsageError
from fased.settings import env_flag, env_int


@pytest.mark.parametrize("text, value", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("OFF", False), ("", None), ("  ", None)])
def test_a_flag_reads_the_usual_spellings(monkeypatch, text, value):
    monkeypatch.setenv("FASED_X", text)
    assert env_flag("FASED_X") is (value if value is not None else False)
    assert env_flag("FASED_X", default=True) is (value if value is not None else True)


def test_an_unset_flag_is_its_default(monkeypatch):
    monkeypatch.delenv("FASED_X", raising=False)
    assert env_flag("FASED_X") is False and env_flag("FASED_X", default=True) is True


@pytest.mark.parametrize("text", ["garbage", "2", "y e s", "\x1b[31m"])
def test_any_other_flag_value_is_refused_by_name(monkeypatch, text):
    """FASED_EMBEDDED=false (or off, or a typo) pulled the model: only `0` was read."""
    monkeypatch.setenv("FASED_X", text)
    with pytest.raises(UsageError) as err:
        env_flag("FASED_X")
    assert err.value.message.startswith("FASED_X must be 1 or 0")
    assert "\x1b" not in err.value.message
    assert env_flag("FASED_X", strict=False) is True  # where nothing may fail


def test_a_number_out_of_range_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("FASED_N", "7")
    with pytest.raises(UsageError, match="FASED_N must be a whole number from 1 to 5"):
        env_int("FASED_N", 3, 1, 5)
    monkeypatch.setenv("FASED_N", " ")
    assert env_int("FASED_N", 3, 1, 5) == 3
