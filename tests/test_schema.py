from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db

PREFIX = "/api/experimental"
# SPEC §3: every endpoint, with its methods.
SPEC_PATHS = {
    "/chats": {"get", "post"},
    "/chats/{id}": {"get", "patch", "delete"},
    "/chats/{id}/messages": {"get", "post"},
    "/chats/{id}/interrupt": {"post"},
    "/chats/{id}/resume": {"post"},
    "/chats/{id}/compact": {"post"},
    "/chats/{id}/children": {"get"},
    "/chats/{id}/files/{file_id}": {"get"},
    "/chats/{id}/desktop/screenshot": {"get"},
    "/chats/{id}/desktop/takeover": {"post"},
    "/chats/{id}/desktop/handback": {"post"},
    "/chats/{id}/approvals": {"get"},
    "/approvals": {"get"},
    "/approvals/{id}": {"post"},
    "/workspace-agents": {"get", "post"},
    "/workspace-agents/{id}": {"get", "delete"},
    "/workspace-agents/heartbeat": {"post"},
    "/tokens": {"get", "post"},
    "/tokens/{id}": {"get", "delete"},
}


def test_schema_generates_and_validates_without_warnings(tmp_path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "chatdesk API"


def test_schema_endpoint_lists_every_spec_path_with_its_methods(client) -> None:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    missing = []
    for path, methods in SPEC_PATHS.items():
        offered = set(paths.get(PREFIX + path, {}))
        if not methods <= offered:
            missing.append(f"{path}: {sorted(methods - offered)}")
    assert not missing, "missing from the schema: " + "; ".join(missing)


def test_schema_documents_bearer_authentication(client) -> None:
    schema = client.get("/api/schema/?format=json").json()
    schemes = schema["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= next(
        s for s in schemes.values() if s.get("scheme") == "bearer"
    ).items()
    heartbeat = schema["paths"][f"{PREFIX}/workspace-agents/heartbeat"]["post"]
    assert "token" in heartbeat["description"]


def test_interactive_docs_are_an_html_page(client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "swagger" in html.lower()
    assert "/api/schema/" in html


def test_a_chat_documents_why_it_is_paused(client) -> None:
    schemas = client.get("/api/schema/?format=json").json()["components"]["schemas"]
    paused_reason = schemas["Chat"]["properties"]["paused_reason"]
    assert paused_reason["nullable"] is True
    (enum_ref,) = [ref["$ref"] for ref in paused_reason["oneOf"] if "NullEnum" not in ref["$ref"]]
    enum = schemas[enum_ref.rsplit("/", 1)[1]]["enum"]
    assert enum == ["interrupted", "taken_over", "needs_help", "awaiting_approval", "budget"]


def test_schema_documents_cost_and_budget_fields(client) -> None:
    schema = client.get("/api/schema/?format=json").json()
    chat = schema["components"]["schemas"]["Chat"]["properties"]
    assert {"cost_usd", "tree_cost_usd", "tree_usage", "budget_usd"} <= set(chat)
    assert chat["budget_usd"].get("nullable") is True
    for name in ("ChatCreateRequest", "PatchedChatUpdateRequest"):
        assert "budget_usd" in schema["components"]["schemas"][name]["properties"]
    assert "409" in schema["paths"][f"{PREFIX}/chats/{{id}}/resume"]["post"]["responses"]
    assert "cost_usd" in schema["components"]["schemas"]["Message"]["properties"]
