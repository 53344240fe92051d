"""JSON request bodies read by the route itself, after the key is checked (FastAPI would parse a declared body first,
answering a malformed one 422 before a missing key's 401), bounded, and judged into problem+json naming the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from thumbify.errors import InvalidUpload, invalid_options, message_of

MAX_JSON_BYTES = 64 * 1024
Model = TypeVar("Model", bound=BaseModel)


async def json_body(request: Request) -> dict:
    """A small JSON object body (none: `{}`); 422 for anything else (or over 64 KiB)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise InvalidUpload(f"the JSON body is larger than {MAX_JSON_BYTES:,} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise invalid_options([{"field": "body", "message": f"not a JSON document: {exc}"}]) from None
    if not isinstance(body, dict):
        raise invalid_options([{"field": "body", "message": "must be a JSON object"}])
    return body


async def parsed(request: Request, model: type[Model]) -> Model:
    """The body as `model`; 422 naming each bad field."""
    try:
        return model.model_validate(await json_body(request))
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": message_of(e)} for e in exc.errors()
        ]
        raise invalid_options(errors) from None


def documented(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON body (its nested models written in place)."""
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": required, "content": {"application/json": {"schema": inline(schema)}}}}
