"""The bridge schema registry (`bridge/schema-registry.yaml`): every event type the gateway publishes and its
payload.

`validate_event()` runs for every bridge event the one publish function writes (gateway/bridge/outbox.py): an
event whose type is not listed, or whose payload has an undeclared key, misses a required one, or carries a value
of the wrong type, raises `BridgeSchemaError`, which fails the transaction that tried to publish it (the webhook
answers 500 and Stripe retries after the fix). The file is parsed once per process and checked at boot (`bridge_ctx`).

"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ApiError

REGISTRY_PATH = Path(__file__).resolve().parents[2] / "bridge" / "schema-registry.yaml"

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
_EVENT_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")


class BridgeSchemaError(ApiError):
    """A bridge event does not match the registry (a bug: the publishing transaction is rolled back)."""

    status = 500
    code = "bridge_schema_violation"
    message = "A bridge event does not match the schema registry"


class RegistryFileError(Exception):
    """The registry file itself is invalid (reported at boot)."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str
    required: bool
    nullable: bool
    enum: tuple[Any, ...] | None

    def check(self, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else f"{self.name}: null is not allowed"
        python_types = _TYPES[self.type]
        if isinstance(value, bool) and self.type != "boolean":
            return f"{self.name}: expected {self.type}, got boolean"
        if not isinstance(value, python_types):
            return f"{self.name}: expected {self.type}, got {type(value).__name__}"
        if self.enum is not None and value not in self.enum:
            return f"{self.name}: {value!r} is not one of {list(self.enum)}"
        return None


@dataclass(frozen=True, slots=True)
class EventSpec:
    event_type: str
    version: int
    fields: Mapping[str, FieldSpec]


@dataclass(frozen=True, slots=True)
class Registry:
    registry_version: int
    events: Mapping[str, EventSpec]
    metadata: Mapping[str, FieldSpec]

    def validate(
        self,
        event_type: str,
        user_id: object,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        spec = self.events.get(event_type)
        if spec is None:
            raise BridgeSchemaError(f"bridge event type {event_type!r} is not in the schema registry")
        problems: list[str] = []
        if user_id is not None and not isinstance(user_id, str):
            problems.append("user_id: expected string or null")
        problems.extend(_check_fields(spec.fields, payload))
        if metadata is not None:
            problems.extend(_check_fields(self.metadata, metadata, prefix="metadata."))
        if problems:
            raise BridgeSchemaError(f"{event_type} does not match the schema registry: " + "; ".join(problems))


def _check_fields(fields: Mapping[str, FieldSpec], values: Mapping[str, Any], prefix: str = "") -> list[str]:
    problems = [f"{prefix}{key}: not declared" for key in values if key not in fields]
    for name, spec in fields.items():
        if name not in values:
            if spec.required:
                problems.append(f"{prefix}{name}: required")
            continue
        problem = spec.check(values[name])
        if problem is not None:
            problems.append(prefix + problem)
    return problems


def _field(name: str, raw: Any, where: str) -> FieldSpec:
    if not isinstance(raw, Mapping):
        raise RegistryFileError(f"{where}.{name}: must be a mapping")
    kind = raw.get("type")
    if kind not in _TYPES:
        raise RegistryFileError(f"{where}.{name}: type must be one of {sorted(_TYPES)}")
    enum = raw.get("enum")
    if enum is not None and not isinstance(enum, list):
        raise RegistryFileError(f"{where}.{name}: enum must be a list")
    return FieldSpec(
        name,
        kind,
        bool(raw.get("required", False)),
        bool(raw.get("nullable", False)),
        tuple(enum) if enum is not None else None,
    )


def parse_registry(document: Any) -> Registry:
    if not isinstance(document, Mapping):
        raise RegistryFileError("the registry must be a mapping")
    version = document.get("registry_version")
    if not isinstance(version, int):
        raise RegistryFileError("registry_version: must be an integer")
    events_raw = document.get("events")
    if not isinstance(events_raw, Mapping) or not events_raw:
        raise RegistryFileError("events: must be a non-empty mapping")
    events: dict[str, EventSpec] = {}
    for event_type, entry in events_raw.items():
        if not isinstance(event_type, str) or not _EVENT_TYPE_RE.match(event_type):
            raise RegistryFileError(f"events: {event_type!r} is not an UPPER_SNAKE event type")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("version"), int):
            raise RegistryFileError(f"events.{event_type}: needs an integer version")
        payload = entry.get("payload")
        if not isinstance(payload, Mapping) or not payload:
            raise RegistryFileError(f"events.{event_type}.payload: must be a non-empty mapping")
        fields = {name: _field(name, raw, f"events.{event_type}.payload") for name, raw in payload.items()}
        events[event_type] = EventSpec(event_type, entry["version"], fields)
    metadata_raw = document.get("metadata") or {}
    if not isinstance(metadata_raw, Mapping):
        raise RegistryFileError("metadata: must be a mapping")
    metadata = {name: _field(name, raw, "metadata") for name, raw in metadata_raw.items()}
    return Registry(version, events, metadata)


def load_registry(path: Path = REGISTRY_PATH) -> Registry:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryFileError(f"{path}: {exc}") from exc
    return parse_registry(document)


@cache
def registry() -> Registry:
    """The registry of this process (parsed once)."""
    return load_registry()


def validate_event(
    event_type: str, user_id: object, payload: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> None:
    registry().validate(event_type, user_id, payload, metadata)
