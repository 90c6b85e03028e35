"""Dagster ``Config`` classes derived mechanically from the library's settings classes.

A stage's launchpad config is never written by hand: :func:`dagster_config` copies every field (type,
default, description) of one or more library settings classes, so a field added to the library is in the
launchpad at once with the same default, and ``config.build(LibraryClass)`` turns the launchpad values
back into the library object (unknown keys are an error, see ``config_schema``).
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Mapping
from typing import Annotated, Any

import dagster as dg
from pydantic import BaseModel, Field, create_model, model_validator

from config_schema import REQUIRED, SettingField, from_mapping, is_settings_class, settings_fields

_DERIVED: dict[type, type[dg.Config]] = {}


class DerivedConfig(dg.Config):
    """Base of derived configs: knows its library classes and builds them; unknown keys are an error."""

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = sorted(cls.model_fields)
            unknown = sorted(set(map(str, data)) - set(allowed))
            if unknown:
                raise ValueError(f"unknown key(s) {unknown} in {cls.__name__}; allowed: {allowed}")
        return data

    @model_validator(mode="after")
    def _library_accepts(self) -> DerivedConfig:
        # the library's own checks (ranges, combinations) run as soon as the config is built, not mid-run
        if type(self).__digr_check_on_create__:
            for cls in self.library_classes():
                self.build(cls)
        return self

    @classmethod
    def library_classes(cls) -> tuple[type, ...]:
        return cls.__digr_library__  # type: ignore[attr-defined]

    def build(self, library_class: type | None = None, **updates: Any) -> Any:
        """The library settings object of ``library_class`` (default: the only/first one) from these values,
        with ``updates`` applied on top (used by variants that flip one switch)."""
        classes = self.library_classes()
        target = library_class or classes[0]
        if target not in classes:
            raise TypeError(f"{type(self).__name__} is derived from {classes}, not {target}")
        names = {f.name for f in settings_fields(target)}
        values = {k: v for k, v in self.model_dump().items() if k in names}
        values.update(updates)
        return from_mapping(target, values, where=f"{type(self).__name__} → {target.__name__}")


    def nested_values(self, key: str) -> dict[str, Any]:
        """The values of the nested sub-config ``key`` as a plain mapping."""
        value = getattr(self, key)
        return value.model_dump() if isinstance(value, dg.Config) else dict(value)


def _dagster_type(annotation: Any) -> Any:
    """The Dagster-config-compatible spelling of a library type (tuples as lists, settings as Configs)."""
    if is_settings_class(annotation):
        return derived_config(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return list[args[0]] if args else list
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        mapped = tuple(_dagster_type(a) for a in args)
        return typing.Union[mapped]  # noqa: UP007 - built from a tuple of types
    return annotation


def _with_constraints(annotation: Any, library_class: type, name: str) -> Any:
    """``annotation`` with the pydantic constraints and validators of the library field (``ge=1``, an
    ``AfterValidator``), so the derived config refuses what the library refuses (dataclasses have none)."""
    if not issubclass(library_class, BaseModel):
        return annotation
    metadata = library_class.model_fields[name].metadata
    return Annotated[(annotation, *metadata)] if metadata else annotation


def _dagster_default(field: SettingField) -> Any:
    default = field.default
    if is_settings_class(type(default)):
        return derived_config(type(default))(**_as_plain(default))
    if isinstance(default, tuple):
        return list(default)
    return default


def _as_plain(settings: Any) -> dict[str, Any]:
    from config_schema import to_mapping

    return to_mapping(settings)


def dagster_config(*library: type, name: str, exclude: Collection[str] = (),
                   descriptions: Mapping[str, str] | None = None, doc: str | None = None,
                   nested: Mapping[str, tuple[type, Collection[str], str]] | None = None,
                   check_on_create: bool = True) -> type[DerivedConfig]:
    """A Dagster Config with every field of the ``library`` settings classes but ``exclude``.

    Field names must not clash between the classes (a clash would be two definitions of one setting).
    ``nested`` adds one sub-config per entry: ``name -> (settings class, its excluded fields, description)``;
    ``config.nested_values(name)`` returns its values as a plain mapping. ``check_on_create`` runs the
    library's validation when the config is made (off where the asset completes the values at run time).
    """
    fields: dict[str, tuple[Any, Any]] = {}
    owner: dict[str, str] = {}
    for cls in library:
        for f in settings_fields(cls):
            if f.name in exclude:
                continue
            if f.name in fields:
                raise TypeError(f"setting {f.name!r} is defined by both {owner[f.name]} and {cls.__name__}")
            description = (descriptions or {}).get(f.name, f.description)
            default = _dagster_default(f)
            if f.required:
                info = Field(description=description)
            elif isinstance(default, list | dict | dg.Config):
                info = Field(default_factory=lambda d=default: d.model_copy() if isinstance(d, dg.Config)
                             else type(d)(d), description=description)
            else:
                info = Field(default=default, description=description)
            fields[f.name] = (_with_constraints(_dagster_type(f.annotation), cls, f.name), info)
            owner[f.name] = cls.__name__
    for key, (cls, excluded, description) in (nested or {}).items():
        if key in fields:
            raise TypeError(f"nested config {key!r} clashes with a setting of the same name")
        sub = dagster_config(cls, name=f"{name}_{key}", exclude=excluded)
        fields[key] = (sub, Field(default_factory=sub, description=description))
    unknown_excluded = set(exclude) - {f.name for cls in library for f in settings_fields(cls)}
    if unknown_excluded:
        raise TypeError(f"exclude names settings that do not exist: {sorted(unknown_excluded)}")
    model = create_model(name, __base__=DerivedConfig, __doc__=doc or library[0].__doc__, **fields)
    model.__digr_library__ = tuple(library)
    model.__digr_excluded__ = tuple(exclude)
    model.__digr_check_on_create__ = check_on_create
    return model


def derived_config(library_class: type) -> type[DerivedConfig]:
    """The (cached) Dagster Config of one nested settings class."""
    if library_class not in _DERIVED:
        _DERIVED[library_class] = dagster_config(library_class, name=f"{library_class.__name__}Config")
    return _DERIVED[library_class]


__all__ = ["REQUIRED", "DerivedConfig", "dagster_config", "derived_config"]
