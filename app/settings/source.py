"""Where values come from: one merged mapping (the environment over an optional `.env`), read as the
field's type says. An empty value is no value: the default applies."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from dotenv import dotenv_values

from app.settings.declare import SettingsError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: Old names read since the last `take_renamed_variables()`, with their new names.
_renamed_in_use: dict[str, str] = {}


def merged_values(environ: Mapping[str, str] | None, env_file: Path | None) -> dict[str, str]:
    """`environ` (default: the process environment) over the `.env` file (default: `./.env`)."""
    merged: dict[str, str] = {}
    dotenv_path = env_file if env_file is not None else Path.cwd() / ".env"
    if dotenv_path.is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


class Source:
    """Reads typed values from one merged mapping of variables."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def _raw(self, name: str) -> str | None:
        value = self._values.get(name)
        return None if value is None or value == "" else value

    def lookup(self, name: str, renamed_from: tuple[str, ...] = ()) -> tuple[str, str | None]:
        """The name that was set (`name`, else one of its old names) and its value (None: unset)."""
        value = self._raw(name)
        if value is not None:
            return name, value
        for old in renamed_from:
            value = self._raw(old)
            if value is not None:
                _renamed_in_use[old] = name
                return old, value
        return name, None

    def read(self, name: str, kind: Any, default: Any) -> Any:
        """The value of `name` as `kind`, `default` when it is unset."""
        _, value = self.lookup(name)
        return default if value is None else parse(kind, name, value)


def take_renamed_variables() -> dict[str, str]:
    """The old names settings were read from (old -> new) since the last call: logged once by
    `app.logging.configure_logging`, which runs after the settings are read."""
    taken = dict(_renamed_in_use)
    _renamed_in_use.clear()
    return taken


def parse(kind: Any, name: str, value: str) -> Any:
    """`value` as the type `kind` (a field's annotation); `name` is the variable, for errors."""
    if get_origin(kind) is Literal:
        return _choice(name, value, tuple(str(arg) for arg in get_args(kind)))
    if get_origin(kind) is tuple:
        item = get_args(kind)[0]
        if item is float:
            return _floats(name, value)
        if item is int:
            return tuple(_integer(name, part.strip()) for part in value.split(",") if part.strip())
        if item is str or get_origin(item) in (Union, UnionType):
            return tuple(part.strip() for part in value.split(",") if part.strip())
    parser = _PARSERS.get(kind)
    if parser is None:
        raise TypeError(f"no parser for {name}'s type {kind!r}")
    return parser(name, value)


def _text(name: str, value: str) -> str:
    return value


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {value!r}") from exc


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {value!r}") from exc


def _decimal(name: str, value: str) -> Decimal:
    return Decimal(str(_number(name, value)))


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _floats(name: str, value: str) -> tuple[float, ...]:
    try:
        parsed = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{name} must be comma-separated numbers, got {value!r}") from exc
    if not parsed:
        raise SettingsError(f"{name} must list at least one number")
    return parsed


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


_PARSERS: dict[Any, Any] = {str: _text, int: _integer, float: _number, bool: _flag, Decimal: _decimal}
