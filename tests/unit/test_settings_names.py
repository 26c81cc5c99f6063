"""Every variable is named by one rule, and a renamed variable's old name keeps working."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import get_type_hints

import pytest

from app.settings import Settings, SettingsError, load_settings, take_renamed_variables
from app.settings.declare import spec_of

NO_FILE = Path("/nonexistent.env")


def declared() -> list[tuple[str, str, tuple[str, ...]]]:
    """(field name, variable, old names) of every setting, group by group."""
    hints = get_type_hints(Settings)
    groups = [Settings] + [hints[item.name] for item in dataclasses.fields(Settings) if spec_of(item) is None]
    return [(item.name, spec.env, spec.renamed_from)
            for group in groups for item in dataclasses.fields(group)
            if (spec := spec_of(item)) is not None]


def test_each_variable_is_its_fields_name_behind_the_words_of_its_concern() -> None:
    names = declared()
    assert len(names) > 70
    for field_name, env, _ in names:
        # seconds are not spelled; every other unit is, in both names
        expected = field_name.upper().removesuffix("_S")
        assert env == expected or env.endswith("_" + expected), (field_name, env)


def test_no_two_settings_share_a_variable_or_an_old_name() -> None:
    every = [name for _, env, old in declared() for name in (env, *old)]
    assert len(every) == len(set(every))


@pytest.mark.parametrize(("old", "new", "read"), [
    ("OUTBOX_POLL_INTERVAL", "RELAY_POLL_INTERVAL", lambda s: s.worker.relay_poll_interval_s),
    ("AUTOSCALE_COOLDOWN_S", "AUTOSCALE_COOLDOWN", lambda s: s.autoscale.cooldown_s),
    ("AUTH_RATE_LIMIT", "AUTH_RATE_LIMIT_REQUESTS", lambda s: s.auth.rate_limit_requests),
    ("RIDE_RATE_BURST", "RIDES_RATE_BURST", lambda s: s.limits.rides.burst),
])
def test_an_old_name_still_works_the_new_one_wins_and_the_old_one_is_reported(
    old: str, new: str, read: Callable[[Settings], float]
) -> None:
    take_renamed_variables()
    assert read(load_settings({old: "7"}, env_file=NO_FILE)) == 7
    assert take_renamed_variables() == {old: new}

    assert read(load_settings({old: "7", new: "9"}, env_file=NO_FILE)) == 9
    assert take_renamed_variables() == {}


def test_a_bad_value_under_an_old_name_is_refused_by_that_name() -> None:
    with pytest.raises(SettingsError, match="OUTBOX_BATCH_SIZE must be a positive integer"):
        load_settings({"OUTBOX_BATCH_SIZE": "0"}, env_file=NO_FILE)
    with pytest.raises(SettingsError, match="RELAY_BATCH_SIZE must be a positive integer"):
        load_settings({"RELAY_BATCH_SIZE": "0"}, env_file=NO_FILE)
