"""The OpenAPI 3.1 document of the HTTP API, written from the routes' own `Operation`s and the
pydantic models they name (`model_json_schema`), and the check that no route lacks one.

OpenAPI 3.1 because its schemas are JSON Schema 2020-12, which is what pydantic writes (a
nullable field is `anyOf [..., {"type": "null"}]`, which 3.0 would refuse), and because 3.1
lets a bearer scheme's requirement list role names: each operation lists exactly the roles
`needs` lets in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from appliance import __version__
from appliance.core.api import Answer, ErrorBody, Operation

__all__ = ["document", "undocumented"]

REF = "#/components/schemas/{model}"
BEARER = "bearer"
DESCRIPTION = (
    "Switchboard's HTTP API. Every refusal is a 4xx with a JSON body `{\"error\": \"why\"}`. Routes with a "
    "`bearer` requirement need `Authorization: Bearer TOKEN`, a console token (`POST /api/login`, or "
    "`appliance token NAME --role ROLE`) whose role is one of those the requirement lists; without a valid "
    "one they answer 401, with another role 403."
)
# Said of every route behind `needs`, besides what the route itself adds.
REFUSALS = {401: "no valid console bearer token", 403: "the token's role is not one this route lets in"}


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    operations = list(operations)
    schemas, components = _schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, schemas,
                                                                                     components)
    security_schemes: dict[str, Any] = {
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                 "description": "a console token; the roles each route lets in are listed in its requirement"}}
    for header in sorted({o.signature_header for o in operations if o.signature_header}):
        security_schemes[header] = {"type": "apiKey", "in": "header", "name": header,
                                    "description": "an HMAC of the request by its caller (Twilio's signature)"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": __version__, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": security_schemes},
    }


def undocumented(router: web.UrlDispatcher, operations: Sequence[Operation]) -> list[str]:
    """Routes `router` answers that no operation describes (aiohttp's HEAD beside each GET aside)."""
    known = {(o.method, o.path) for o in operations}
    missing = []
    for route in router.routes():
        path = route.resource.canonical if route.resource is not None else "?"
        method = "GET" if route.method == "HEAD" else route.method
        if (method, path) not in known:
            missing.append(f"{route.method} {path}")
    return missing


def _schemas(operations: list[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Each model's schema (a $ref), and the components they refer to, named after the models."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorBody, "serialization"): None}
    for operation in operations:
        for model in (operation.body, operation.form, operation.query, operation.path_params, operation.headers):
            if model is not None:
                wanted[(model, "validation")] = None
        for answer in operation.answers.values():
            if answer.model is not None:
                wanted[(answer.model, "serialization")] = None
    refs, defs = models_json_schema(list(wanted), ref_template=REF)
    return refs, defs.get("$defs", {})


def _operation(operation: Operation, schemas: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "operationId": _operation_id(operation),
        "summary": operation.summary,
        "tags": [operation.tag] + (["websocket"] if operation.websocket else []),
        "parameters": _parameters(operation, schemas, components),
        "responses": _responses(operation, schemas),
    }
    if operation.roles is not None:
        found["security"] = [{BEARER: list(operation.roles)}]
    elif operation.signature_header is not None:
        found["security"] = [{operation.signature_header: []}]
    else:
        found["security"] = []  # open
    for media, model in (("application/json", operation.body), ("application/x-www-form-urlencoded",
                                                               operation.form)):
        if model is not None:
            found["requestBody"] = {"required": True,
                                    "content": {media: {"schema": schemas[(model, "validation")]}}}
    if operation.websocket:
        found["x-websocket"] = True
    return found


def _operation_id(operation: Operation) -> str:
    words = [w.strip("{}") for w in operation.path.replace(".", "_").split("/") if w]
    return "_".join([operation.method.lower(), *words]) if words else operation.method.lower() + "_root"


def _parameters(operation: Operation, schemas: dict[Any, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    parameters = []
    for where, model in (("path", operation.path_params), ("query", operation.query), ("header", operation.headers)):
        if model is None:
            continue
        name = schemas[(model, "validation")]["$ref"].rsplit("/", 1)[-1]
        component = components[name]
        for field, schema in component.get("properties", {}).items():
            schema = _parameter_schema(schema)
            parameter = {"name": field, "in": where, "required": where == "path" or field in
                         component.get("required", ()), "schema": schema}
            if "description" in schema:
                parameter["description"] = schema.pop("description")
            parameters.append(parameter)
    return parameters


def _parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's schema as a parameter's: without pydantic's `| None` (an optional parameter is left
    out, never null) and without the title (the parameter has a name)."""
    schema = {k: v for k, v in schema.items() if k != "title"}
    kinds = schema.get("anyOf", [])
    if {"type": "null"} in kinds and len(kinds) == 2:
        schema |= next(k for k in kinds if k != {"type": "null"})
        del schema["anyOf"]
        if schema.get("default", ...) is None:
            del schema["default"]
    return schema


def _responses(operation: Operation, schemas: dict[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(operation.answers.items()):
        responses[str(status)] = _answer(answer, schemas)
    if operation.websocket:
        responses["101"] = {"description": "Switching Protocols: the WebSocket is open"}
    errors = dict(REFUSALS) if operation.roles is not None else {}
    for status, why in operation.errors.items():
        errors[status] = f"{errors[status]}; or {why}" if status in errors else why
    error_body = {"application/json": {"schema": schemas[(ErrorBody, "serialization")]}}
    for status, why in sorted(errors.items()):
        responses[str(status)] = {"description": why, "content": error_body}
    return responses


def _answer(answer: Answer, schemas: dict[Any, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        found["content"] = {"application/json": {"schema": schemas[(answer.model, "serialization")]}}
    elif answer.media:
        # No schema for audio, text or a free-form document: the media type says what it is.
        found["content"] = {media: {} for media in answer.media}
    if answer.headers:
        found["headers"] = {name: {"description": what, "schema": {"type": "string"}}
                            for name, what in answer.headers.items()}
    return found
