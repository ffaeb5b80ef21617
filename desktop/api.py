"""REST endpoints of a chat's desktop: screenshot, control (who holds it), take-over, hand-back. Thin:
validate, call, serialize.

The live desktop itself is a WebSocket (``desktop.consumers``).
"""

from __future__ import annotations

from collections.abc import Iterable

from asgiref.sync import async_to_sync
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import WorkspaceAgent
from chatdesk.exceptions import AgentNotConnected
from chats.selectors import chat_for_user
from desktop import client, control, services
from desktop.serializers import (
    DesktopControlSerializer,
    HandbackSerializer,
    ScreenshotQuerySerializer,
    TakeoverSerializer,
)

ERROR = OpenApiResponse(
    description='`{"detail": ...}`',
    examples=[OpenApiExample("error", value={"detail": "Workspace agent is not connected."})],
)


class FirstRendererNegotiation(BaseContentNegotiation):
    """Errors are JSON whatever the client accepts (an <img> asks for image/*); success is a PNG."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class DesktopScreenshotView(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        summary="Take a screenshot of the chat's desktop",
        description="A PNG of the desktop now, at its native size or `width` pixels wide (16-4096, aspect "
        "ratio kept). 409 when the chat has no connected workspace agent, 502 when the agent cannot be "
        "reached or fails, 503 when the server cannot decrypt its credential for the agent (misconfigured).",
        parameters=[ScreenshotQuerySerializer],
        responses={
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The screenshot."),
            400: ERROR,
            404: ERROR,
            409: ERROR,
            502: ERROR,
            503: ERROR,
        },
    )
    def get(self, request: Request, pk: str) -> HttpResponse:
        chat = chat_for_user(user=request.user, chat_id=pk)  # type: ignore[arg-type]
        query = ScreenshotQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        agent = client.agent_for_chat(chat)
        shot = async_to_sync(client.screenshot)(agent, query.validated_data.get("width"))
        response = HttpResponse(shot.png, content_type="image/png")
        response["Cache-Control"] = "no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response


def control_response(agent: WorkspaceAgent) -> Response:
    return Response(DesktopControlSerializer(control.control_state(agent)).data)


class DesktopControlView(APIView):
    @extend_schema(
        summary="Who controls the chat's desktop",
        description="`holder` is `model` while the agent's computer-use chats act on the desktop, `person` "
        "while a user holds it (`user`: their username), null when nobody does; `since` is when it last "
        "changed. Only the person holding the desktop can send it input (keys, pointer, clipboard) "
        "through the live desktop; every other viewer is view-only. 409 when the chat has no workspace "
        "agent.",
        responses={200: DesktopControlSerializer, 404: ERROR, 409: ERROR},
    )
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request.user, chat_id=pk)  # type: ignore[arg-type]
        agents = WorkspaceAgent.objects.select_related("desktop_held_by")
        agent_id = chat.workspace_agent_id
        agent = agents.filter(pk=agent_id).first() if agent_id is not None else None
        if agent is None:
            raise AgentNotConnected(client.NO_AGENT)
        return control_response(agent)


class DesktopTakeoverView(APIView):
    @extend_schema(
        summary="Take control of the chat's desktop",
        description="Makes you the holder of the desktop (from the agent, nobody or another person): only "
        "your viewers' input then reaches it. Computer-use chats working on it pause after their current "
        "action (`paused_reason`: `taken_over`) and stay paused until you hand it back. Returns who "
        "controls the desktop. 409 when the chat has no workspace agent.",
        request=TakeoverSerializer,
        responses={200: DesktopControlSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request.user, chat_id=pk)  # type: ignore[arg-type]
        TakeoverSerializer(data=request.data).is_valid(raise_exception=True)
        agent = services.desktop_takeover(chat=chat, user=request.user)  # type: ignore[arg-type]
        return control_response(agent)


class DesktopHandbackView(APIView):
    @extend_schema(
        summary="Hand the chat's desktop back",
        description="Gives the desktop back. Each computer-use chat on the desktop paused for a person "
        "(`paused_reason` `taken_over` or `needs_help`; not one that was interrupted) is told that "
        "a person used it (with your `note`) and resumes; the agent then holds the desktop (nobody, when "
        "no chat resumes). Returns who controls the desktop. 409 when you do not hold it (nobody does, "
        "the agent does, or another person does) or the chat has no workspace agent.",
        request=HandbackSerializer,
        responses={200: DesktopControlSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request.user, chat_id=pk)  # type: ignore[arg-type]
        data = HandbackSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent = services.desktop_handback(
            chat=chat,
            user=request.user,  # type: ignore[arg-type]
            note=data.validated_data.get("note"),
        )
        return control_response(agent)
