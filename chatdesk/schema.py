"""OpenAPI descriptions that drf-spectacular cannot infer: how our Bearer tokens authenticate, and the
error answers every operation gives."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as OpenApiAutoSchema
from drf_spectacular.plumbing import ResolvedComponent


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "chatdesk.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token: `Authorization: Bearer <token>` (create one under /tokens).",
        }


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What went wrong, for a person."}},
    "required": ["detail"],
}
# Field errors ({"field": ["message", …]}) or a {"detail": …} for a request that could not be read.
VALIDATION_ERROR_SCHEMA = {"type": "object", "additionalProperties": {}}
ERROR_DESCRIPTIONS = {
    "400": 'The request is invalid: field errors (`{"field": ["message"]}`) or `{"detail": …}`.',
    "401": "Not authenticated: no, or an invalid, `Authorization: Bearer <token>` header.",
    "404": "No such object, or not yours (another user's objects are a 404, never a 403).",
    "413": "The request body is over 1 MiB.",
    "415": "The request body is not JSON (`Content-Type: application/json`).",
    "503": "A service chatdesk needs (PostgreSQL, Redis) is unreachable; nothing was saved. Retry later "
    "(see `Retry-After`).",
}


class AutoSchema(OpenApiAutoSchema):
    """drf-spectacular's schema, plus the error answers every operation really gives.

    400 where there is a body or query parameters, 401 under Bearer/session authentication, 404 where
    the path names an object (or a list pages), 413/415 where there is a body, 503 everywhere (a database
    or Redis outage). Views document their own other answers (409, 502) with ``@extend_schema``.
    """

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses: dict[str, Any] = operation.setdefault("responses", {})
        query = any(p.get("in") == "query" for p in operation.get("parameters", []))
        named = any(p.get("in") == "path" for p in operation.get("parameters", []))
        body = "requestBody" in operation
        wanted = {"401", "503"}
        if body or query:
            wanted.add("400")
        if named or query:
            wanted.add("404")
        if body:
            wanted |= {"413", "415"}
        for code in sorted(wanted - set(responses)):
            schema = VALIDATION_ERROR_SCHEMA if code == "400" else ERROR_SCHEMA
            name = "ValidationError" if code == "400" else "Error"
            component = ResolvedComponent(
                name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema
            )
            self.registry.register_on_missing(component)
            responses[code] = {
                "content": {"application/json": {"schema": component.ref}},
                "description": ERROR_DESCRIPTIONS[code],
            }
        return operation
