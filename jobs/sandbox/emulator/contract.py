"""RunPod's REST v2 contract (extracted from RunPod's OpenAPI document by `tools/extract_runpod_contract.py`),
checked with a real JSON Schema 2020-12 validator.

Requests are checked exactly as RunPod's document states them: what breaks it is a 422 for the client.
Responses are checked strictly: besides the document's own rules, no object may carry a property the
document does not declare, because a field only the emulator sends is one a client could come to rely on
and then miss on the real API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

CONTRACT_PATH = Path(__file__).with_name("runpod_v2_contract.json")
_COMBINATORS = ("allOf", "anyOf", "oneOf")
# Keywords whose subschema is evaluated in place on the same instance, like a combinator's members.
_IN_PLACE = ("if", "then", "else", "not")
_SUBSCHEMA = ("items", "additionalProperties", "unevaluatedProperties", "contains", "propertyNames")
_NAME_MAPS = ("properties", "patternProperties", "dependentSchemas")

Json = Any


@dataclass(frozen=True)
class QueryParameter:
    name: str
    required: bool
    schema: Json
    explode: bool


def _location(prefix: str, path: Any) -> str:
    where = prefix
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


def _declared(schema: Json, definitions: dict[str, Json], seen: set[str] | None = None) -> set[str]:
    """Property names `schema` declares for the object it is applied to, through `$ref`s and combinators."""
    seen = set() if seen is None else seen
    if not isinstance(schema, dict):
        return set()
    names = set(schema.get("properties", {}))
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        seen.add(ref)
        names |= _declared(definitions.get(ref.split("/")[-1], {}), definitions, seen)
    for key in _COMBINATORS:
        for member in schema.get(key, []):
            names |= _declared(member, definitions, seen)
    for key in _IN_PLACE:
        names |= _declared(schema.get(key), definitions, seen)
    return names


def _messages(validator: Draft202012Validator, instance: Json, prefix: str) -> list[str]:
    definitions = validator.schema.get("$defs", {})
    messages = []
    for error in validator.iter_errors(instance):
        message = error.message
        if error.validator == "unevaluatedProperties" and isinstance(error.instance, dict):
            # A property whose own value failed leaves no annotation, so JSON Schema also calls it
            # "unevaluated"; name only the truly undeclared ones (the other failure is reported by itself).
            declared = _declared(error.schema, definitions)
            unknown = sorted(name for name in error.instance if name not in declared)
            if not unknown:
                continue
            message = f"unknown properties: {', '.join(map(repr, unknown))}"
        messages.append((list(map(str, error.absolute_path)), f"{_location(prefix, error.absolute_path)}: {message}"))
    return [text for _, text in sorted(messages)]


def strict(node: Json, *, in_place: bool = False) -> Json:
    """`node` with `unevaluatedProperties: false` on every object schema that isn't a member of a combinator
    (there it would not see its siblings' properties) and that leaves extra properties unsaid."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Json] = {}
    for key, value in node.items():
        if key in _COMBINATORS:
            result[key] = [strict(member, in_place=True) for member in value]
        elif key in _IN_PLACE:
            result[key] = strict(value, in_place=True)
        elif key in _NAME_MAPS:
            result[key] = {name: strict(schema) for name, schema in value.items()}
        elif key == "$defs":
            # Definitions are reached through `$ref`: the referring schema carries the check.
            result[key] = {name: strict(schema, in_place=True) for name, schema in value.items()}
        elif key in _SUBSCHEMA or key == "prefixItems":
            result[key] = strict(value)
        else:
            result[key] = value
    object_like = "properties" in node or "$ref" in node or any(key in node for key in _COMBINATORS)
    if object_like and not in_place and "additionalProperties" not in node and "unevaluatedProperties" not in node:
        result["unevaluatedProperties"] = False
    return result


class Contract:
    def __init__(self, data: Json) -> None:
        self.operations: dict[str, Json] = data["operations"]
        self.definitions: dict[str, Json] = data["$defs"]
        self._strict_definitions: dict[str, Json] = strict({"$defs": self.definitions})["$defs"]
        self._validators: dict[tuple[str, bool], Draft202012Validator] = {}

    @classmethod
    def load(cls, path: Path = CONTRACT_PATH) -> Contract:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def _validator(self, schema: Json, *, strict_objects: bool) -> Draft202012Validator:
        key = (json.dumps(schema, sort_keys=True), strict_objects)
        validator = self._validators.get(key)
        if validator is None:
            if strict_objects:
                root = {**strict(schema), "$defs": self._strict_definitions}
            else:
                root = {**schema, "$defs": self.definitions}
            validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._validators[key] = validator
        return validator

    def operation(self, operation_id: str) -> Json:
        return self.operations[operation_id]

    def check_request_body(self, operation_id: str, body: Json) -> list[str]:
        spec = self.operations[operation_id]["requestBody"]
        if spec is None:
            return [] if body is None else ["body: this operation takes no request body"]
        if body is None:
            return ["body: a JSON request body is required"] if spec["required"] else []
        return _messages(self._validator(spec["schema"], strict_objects=False), body, "body")

    def query_parameters(self, operation_id: str) -> dict[str, QueryParameter]:
        return {
            name: QueryParameter(name, spec["required"], spec["schema"], spec.get("explode", True))
            for name, spec in self.operations[operation_id]["queryParameters"].items()
        }

    def parse_query(self, operation_id: str, raw: Mapping[str, str]) -> tuple[dict[str, Json], list[str], list[str]]:
        """Typed values for the query string, contract errors, and names the contract doesn't know."""
        declared = self.query_parameters(operation_id)
        values: dict[str, Json] = {}
        errors: list[str] = []
        for name, parameter in declared.items():
            if name not in raw:
                if parameter.required:
                    errors.append(f"query.{name}: required")
                continue
            value = self._coerce(raw[name], parameter.schema)
            errors += _messages(self._validator(parameter.schema, strict_objects=False), value, f"query.{name}")
            values[name] = value
        unknown = sorted(name for name in raw if name not in declared)
        return values, errors, unknown

    def _coerce(self, text: str, schema: Json) -> Json:
        """A query string value typed as its schema says; what can't be converted stays text for the
        validator to refuse."""
        while "$ref" in schema:
            schema = self.definitions[schema["$ref"].split("/")[-1]]
        kind = schema.get("type")
        if kind == "array":
            items = schema.get("items", {})
            return [self._coerce(part, items) for part in text.split(",")] if text else []
        if kind == "integer":
            try:
                return int(text)
            except ValueError:
                return text
        if kind == "number":
            try:
                return float(text)
            except ValueError:
                return text
        if kind == "boolean":
            return {"true": True, "false": False}.get(text, text)
        return text

    def response_spec(self, operation_id: str, status: int) -> Json | None:
        responses = self.operations[operation_id]["responses"]
        return responses.get(str(status), responses.get("default"))

    def check_response(self, operation_id: str, status: int, body: Json, content_type: str | None) -> list[str]:
        spec = self.response_spec(operation_id, status)
        if spec is None:
            return [f"status {status} is not a declared response"]
        if spec["schema"] is None:
            return [] if body is None else [f"status {status} declares no body, one was sent"]
        problems = []
        if content_type != spec["contentType"]:
            problems.append(f"content type {content_type!r}, the contract says {spec['contentType']!r}")
        if body is None:
            return [*problems, f"status {status} declares a body, none was sent"]
        return problems + _messages(self._validator(spec["schema"], strict_objects=True), body, "response")


@cache
def runpod_contract() -> Contract:
    return Contract.load()
