"""The one definition of every stage setting: library settings classes (dataclasses or pydantic models)
described field by field, and built from plain mappings that may not carry unknown keys.

Library packages define their settings without Dagster (a dataclass or a pydantic model); the Dagster
layer derives its ``Config`` classes from :func:`settings_fields` mechanically (``digr_dagster.config_models``),
and everything that reads settings from a file, an environment variable or a checkpoint goes through
:func:`from_mapping`, so an unknown key is an error naming it and the allowed ones, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

_MISSING = object()


@dataclass(frozen=True)
class SettingField:
    """One setting: name, type, default (``REQUIRED`` when none) and a one-line description."""

    name: str
    annotation: Any
    default: Any
    description: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


REQUIRED = _MISSING


def is_settings_class(cls: Any) -> bool:
    """A dataclass or pydantic model class (the two shapes library settings take)."""
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or issubclass(cls, BaseModel))


def settings_fields(cls: type) -> list[SettingField]:
    """The fields of a settings class in definition order, with resolved types and defaults.

    Dataclass descriptions come from ``field(metadata={"description": ...})``; pydantic ones from ``Field``.
    """
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        out = []
        for name, info in cls.model_fields.items():
            if info.default_factory is not None:
                default = info.default_factory()
            elif info.is_required():
                default = REQUIRED
            else:
                default = info.default
            out.append(SettingField(name, info.annotation, default, info.description))
        return out
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = REQUIRED
            out.append(SettingField(f.name, hints[f.name], default, f.metadata.get("description")))
        return out
    raise TypeError(f"{cls!r} is not a settings class (a dataclass or a pydantic model)")


def field_names(cls: type) -> list[str]:
    return [f.name for f in settings_fields(cls)]


class UnknownSettingError(ValueError):
    """A mapping named a setting the settings class does not have."""


def check_keys(cls: type, data: Mapping[str, Any], *, where: str | None = None) -> None:
    """Raise :class:`UnknownSettingError` naming every unknown key of ``data`` and the allowed ones."""
    allowed = field_names(cls)
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        place = where or cls.__name__
        raise UnknownSettingError(f"unknown key(s) {unknown} in {place}; allowed: {allowed}")


def from_mapping(cls: type, data: Mapping[str, Any] | None, *, where: str | None = None) -> Any:
    """Build ``cls`` from ``data``; nested settings classes are built from nested mappings the same way.

    Unknown keys are an error naming them and the allowed ones (``where`` says where they came from).
    """
    data = dict(data or {})
    check_keys(cls, data, where=where)
    kwargs = {}
    types = {f.name: f.annotation for f in settings_fields(cls)}
    for key, value in data.items():
        nested = _settings_type(types[key])
        if nested is not None and isinstance(value, Mapping):
            value = from_mapping(nested, value, where=f"{where or cls.__name__}.{key}")
        elif _is_tuple(types[key]) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def to_mapping(settings: Any) -> dict[str, Any]:
    """Plain JSON-ready values of a settings object (nested settings as dicts, tuples as lists)."""
    if isinstance(settings, BaseModel):
        return settings.model_dump(mode="json")
    if dataclasses.is_dataclass(settings):
        return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings) if f.init}
    raise TypeError(f"{settings!r} is not a settings object")


def flat_mapping(settings: Any) -> dict[str, Any]:
    """:func:`to_mapping` in one level, nested settings joined by ``_`` (``reward.alpha`` → ``reward_alpha``), for
    stores of flat key-value pairs such as MLflow params."""

    def flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}_"))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flatten(to_mapping(settings), "")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) or isinstance(value, BaseModel):
        return to_mapping(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _settings_type(annotation: Any) -> type | None:
    """The settings class inside ``annotation`` (``X`` or ``X | None``), else None."""
    if is_settings_class(annotation):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and is_settings_class(args[0]):
        return args[0]
    return None


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple
