"""How a setting is declared: its variable, its doc and its check live on the dataclass field.

`setting("DISPATCH_RADII_KM", (5.0, 10.0, 20.0), doc=..., check=...)` is a `dataclasses.field`
whose metadata is a `Spec`; the loader (`app.settings.loader`) reads every group from its specs and
`scripts/dev/settings_doc.py` writes the configuration table from them.

The naming rule: a variable is its field's name in upper case behind the words that name its concern
(the group's prefix, `DB_`, `WORKER_`, `STRIPE_` …, unless the field's name already says it:
`JWT_SECRET`, `LEDGER_LEASE`, `DRIVER_STALE_AFTER`). Seconds are the unit of every duration and are
not spelled (`interval_s` is `…_INTERVAL`); any other unit is, in both names (`_MS`, `_KM`, `_DAYS`,
`_KIB`). A renamed variable keeps its old name in `renamed_from`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

SPEC_KEY = "setting"


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class Check:
    """A condition a value must meet, and the message (`{name}`, `{value}`) when it does not."""

    test: Callable[[Any], bool]
    message: str

    def verify(self, name: str, value: Any) -> None:
        if not self.test(value):
            raise SettingsError(self.message.format(name=name, value=value))


POSITIVE = Check(lambda v: v > 0, "{name} must be a positive integer, got {value}")
NOT_NEGATIVE = Check(lambda v: v >= 0, "{name} must be 0 or more, got {value}")
DAYS = Check(lambda v: v >= 0, "{name} must be 0 (keep forever) or a number of days, got {value}")


def one_of(*allowed: str) -> Check:
    return Check(lambda v: v in allowed, "{name} must be one of " + ", ".join(allowed) + ", got {value!r}")


@dataclass(frozen=True)
class Spec:
    """What the field's metadata says: where its value comes from and what it is for."""

    env: str
    doc: str
    check: Check | None = None
    renamed_from: tuple[str, ...] = ()
    #: Read by an explicit function (`app.settings.auth`), not by the generic loader.
    explicit: bool = False
    #: The default as the configuration table shows it, when the value itself would mislead.
    shown_default: str | None = None


def setting(env: str, default: T, *, doc: str, check: Check | None = None,
            renamed_from: tuple[str, ...] = (), explicit: bool = False,
            shown_default: str | None = None) -> T:
    """A dataclass field read from the variable `env` (or its old names), `default` when unset."""
    spec = Spec(env, doc, check, renamed_from, explicit, shown_default)
    field: T = dataclasses.field(default=default, metadata={SPEC_KEY: spec})
    return field


def part(env: str, *, doc: str, check: Check | None = None) -> Mapping[str, Spec]:
    """Metadata of a field of a value made of several variables (a `Bucket`): `<SETTING>_<env>`."""
    return {SPEC_KEY: Spec(env, doc, check)}


def spec_of(field: dataclasses.Field[Any]) -> Spec | None:
    spec = field.metadata.get(SPEC_KEY)
    return spec if isinstance(spec, Spec) else None


def env_name(group: type, field_name: str) -> str:
    """The variable of `group.field_name`, for messages about more than one setting."""
    for field in dataclasses.fields(group):
        spec = spec_of(field)
        if field.name == field_name and spec is not None:
            return spec.env
    raise KeyError(f"{group.__name__}.{field_name} is not a setting")


def part_spec(whole: Spec, part_of: Spec) -> Spec:
    """The spec of one variable of a value made of several: `RIDES` and `RATE_BURST` make
    `RIDES_RATE_BURST` (and the old `RIDE_RATE_BURST`)."""
    return Spec(f"{whole.env}_{part_of.env}", part_of.doc, part_of.check,
                tuple(f"{old}_{part_of.env}" for old in whole.renamed_from))
