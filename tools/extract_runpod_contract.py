"""Regenerate the RunPod REST v2 contract the emulator validates against, from RunPod's own OpenAPI document.

Usage:
    python tools/extract_runpod_contract.py [openapi.json] [--out jobs/sandbox/emulator/runpod_v2_contract.json]
    python tools/extract_runpod_contract.py [openapi.json] --check     # exit 1 if the committed file is stale

The default input is `../shared/facts/runpod-v2-openapi.json` relative to the repository root.

For each operation lorabot uses it keeps the method, the path, the query parameters (name, required, schema),
the JSON request body's schema and each response status's content type and body schema. Every component
schema those reach is copied into `$defs` and every `$ref` is rewritten to point there, so each schema can be
validated on its own with a JSON Schema 2020-12 validator. Prose (descriptions, titles, examples) and vendor
extensions are dropped: the file holds facts only. Output is deterministic: sorted keys, trailing newline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "facts" / "runpod-v2-openapi.json"
DEFAULT_OUT = REPO / "jobs" / "sandbox" / "emulator" / "runpod_v2_contract.json"

OPERATIONS = (
    "createPod",
    "getPod",
    "listPods",
    "deletePod",
    "podAction",
    "createNetworkVolume",
    "listNetworkVolumes",
    "getNetworkVolume",
    "updateNetworkVolume",
    "listGpuTypes",
    "listCpuTypes",
    "listDataCenters",
    "listPodBilling",
)
PROSE_KEYS = frozenset({"description", "summary", "examples", "example", "title", "externalDocs"})
# Keywords whose value maps names to schemas: their keys are property names, never prose keywords.
NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
SCHEMA_REF_PREFIX = "#/components/schemas/"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

Json = Any


class ContractError(Exception):
    """The OpenAPI document lacks something the emulator relies on."""


def _resolve(document: Json, ref: str) -> Json:
    if not ref.startswith("#/"):
        raise ContractError(f"only local references are supported, got {ref}")
    node = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _deref(document: Json, node: Json) -> Json:
    """Follow non-schema `$ref`s (responses, parameters) until a real object is reached."""
    while isinstance(node, dict) and "$ref" in node and not node["$ref"].startswith(SCHEMA_REF_PREFIX):
        node = _resolve(document, node["$ref"])
    return node


def clean_schema(node: Json, wanted: set[str], *, names: bool = False) -> Json:
    """A copy without prose or vendor keys, with schema `$ref`s pointing into `$defs`; referenced component
    names are added to `wanted`. `names` is true when `node`'s keys are property names."""
    if isinstance(node, list):
        return [clean_schema(item, wanted) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Json] = {}
    for key, value in node.items():
        if not names and (key in PROSE_KEYS or key.startswith("x-")):
            continue
        if not names and key == "$ref":
            if not isinstance(value, str) or not value.startswith(SCHEMA_REF_PREFIX):
                raise ContractError(f"unexpected reference {value!r} inside a schema")
            name = value[len(SCHEMA_REF_PREFIX) :]
            wanted.add(name)
            result[key] = f"#/$defs/{name}"
            continue
        result[key] = clean_schema(value, wanted, names=not names and key in NAME_MAPS)
    return result


def _find_operations(document: Json) -> dict[str, tuple[str, str, Json, list[Json]]]:
    found: dict[str, tuple[str, str, Json, list[Json]]] = {}
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = (method.upper(), path, operation, shared)
    return found


def extract(document: Json) -> Json:
    operations = _find_operations(document)
    missing = [name for name in OPERATIONS if name not in operations]
    if missing:
        raise ContractError(f"operations missing from the document: {', '.join(missing)}")
    wanted: set[str] = set()
    out_operations: dict[str, Json] = {}
    for name in OPERATIONS:
        method, path, operation, shared = operations[name]
        parameters: dict[str, Json] = {}
        for raw in [*shared, *operation.get("parameters", [])]:
            parameter = _deref(document, raw)
            if parameter["in"] != "query":
                continue
            entry: dict[str, Json] = {
                "required": bool(parameter.get("required", False)),
                "schema": clean_schema(parameter.get("schema", {}), wanted),
            }
            # style=form with explode=false means a list travels as one comma-separated value.
            if parameter.get("explode") is False:
                entry["explode"] = False
            parameters[parameter["name"]] = entry
        request_body = None
        body = _deref(document, operation.get("requestBody"))
        if body is not None:
            content = body.get("content", {})
            if "application/json" not in content:
                raise ContractError(f"{name}: request body is not application/json")
            request_body = {
                "required": bool(body.get("required", False)),
                "schema": clean_schema(content["application/json"].get("schema", {}), wanted),
            }
        responses: dict[str, Json] = {}
        for status, raw in operation.get("responses", {}).items():
            response = _deref(document, raw)
            content = response.get("content", {})
            if not content:
                responses[str(status)] = {"contentType": None, "schema": None}
                continue
            if len(content) != 1:
                raise ContractError(f"{name} {status}: more than one content type")
            [(content_type, media)] = content.items()
            responses[str(status)] = {
                "contentType": content_type,
                "schema": clean_schema(media.get("schema", {}), wanted),
            }
        out_operations[name] = {
            "method": method,
            "path": path,
            "queryParameters": parameters,
            "requestBody": request_body,
            "responses": responses,
        }
    schemas = document["components"]["schemas"]
    definitions: dict[str, Json] = {}
    pending = sorted(wanted)
    while pending:
        name = pending.pop()
        if name in definitions:
            continue
        if name not in schemas:
            raise ContractError(f"reference to a missing component schema: {name}")
        found: set[str] = set()
        definitions[name] = clean_schema(schemas[name], found)
        pending.extend(sorted(found - definitions.keys()))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "source": {"openapi": document["openapi"], "version": document["info"]["version"]},
        "operations": out_operations,
        "$defs": definitions,
    }


def render(contract: Json) -> str:
    return json.dumps(contract, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help="RunPod's OpenAPI JSON")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from what would be written")
    args = parser.parse_args(argv)
    text = render(extract(json.loads(args.source.read_text(encoding="utf-8"))))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"{args.out} is stale: run tools/extract_runpod_contract.py {args.source}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
