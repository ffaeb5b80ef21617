from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.models import WorkspaceAgent
from agents.serializers import (
    HeartbeatResponseSerializer,
    HeartbeatSerializer,
    WorkspaceAgentCreatedSerializer,
    WorkspaceAgentCreateSerializer,
    WorkspaceAgentSerializer,
)
from chatdesk.auth import bearer_from_header, request_user


class WorkspaceAgentListView(APIView):
    @extend_schema(summary="List your workspace agents", responses={200: WorkspaceAgentSerializer(many=True)})
    def get(self, request: Request) -> Response:
        agents = WorkspaceAgent.objects.filter(owner=request_user(request))
        return Response(WorkspaceAgentSerializer(agents, many=True).data)

    @extend_schema(
        summary="Register a workspace agent",
        description="The response holds the agent's `token`, shown only this once: save it in a file "
        "only you can read and run `chatdesk-agent --token-file FILE`.",
        request=WorkspaceAgentCreateSerializer,
        responses={
            201: WorkspaceAgentCreatedSerializer,
            409: OpenApiResponse(description='You already have an agent of that name: `{"detail": …}`.'),
        },
    )
    def post(self, request: Request) -> Response:
        data = WorkspaceAgentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent, raw = services.workspace_agent_create(
            owner=request_user(request), name=data.validated_data["name"]
        )
        agent.token = raw  # type: ignore[attr-defined]
        return Response(WorkspaceAgentCreatedSerializer(agent).data, status=status.HTTP_201_CREATED)


class WorkspaceAgentDetailView(APIView):
    @extend_schema(summary="Get a workspace agent", responses={200: WorkspaceAgentSerializer})
    def get(self, request: Request, pk: str) -> Response:
        agent = get_object_or_404(WorkspaceAgent, pk=pk, owner=request_user(request))
        return Response(WorkspaceAgentSerializer(agent).data)

    @extend_schema(summary="Delete a workspace agent (its token stops working)", responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        get_object_or_404(WorkspaceAgent, pk=pk, owner=request_user(request)).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class HeartbeatView(APIView):
    """Called by `chatdesk-agent` with its own token (not a user's): marks the agent connected."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # Without an authentication class DRF would turn NotAuthenticated into a 403; a missing or wrong
        # agent token is a 401 with a challenge, as everywhere else in the API.
        return 'Bearer realm="workspace-agent"'

    @extend_schema(
        summary="Workspace agent heartbeat",
        description="Called every few seconds by `chatdesk-agent` with `Authorization: Bearer <agent token>`. "
        "The `url` must resolve to an address CHATDESK_AGENT_URL_ALLOW allows (400 otherwise). "
        "`stopping: true` marks the agent disconnected at once.",
        request=HeartbeatSerializer,
        responses={
            200: HeartbeatResponseSerializer,
            400: OpenApiResponse(description="Bad body, or a `url` the server may not connect to."),
            401: OpenApiResponse(description="Unknown agent token."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
        agent = WorkspaceAgent.objects.for_raw_token(raw) if raw else None
        if agent is None:
            raise exceptions.NotAuthenticated("A valid workspace agent token is required.")
        data = HeartbeatSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        display = data.validated_data["display"]
        agent = services.workspace_agent_heartbeat(
            agent=agent,
            url=data.validated_data["url"],
            width=display["width"],
            height=display["height"],
            stopping=data.validated_data["stopping"],
        )
        return Response({"id": str(agent.id), "status": agent.status})
