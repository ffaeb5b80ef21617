"""REST endpoints for chats, their messages and files. Thin: validate, call a service, serialize."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatdesk.auth import request_user
from chatdesk.celery import require_turn_queue
from chats import services
from chats.models import Chat
from chats.selectors import chat_file_for_user, chat_for_user, chats_for_user
from chats.serializers import (
    AuditEventSerializer,
    ChatCreateSerializer,
    ChatListQuerySerializer,
    ChatSerializer,
    ChatUpdateSerializer,
    MessageCreateSerializer,
    MessageListQuerySerializer,
    MessageSerializer,
    audit_event_to_json,
    message_to_json,
)


class ChatListView(generics.ListAPIView):
    serializer_class = ChatSerializer

    @extend_schema(
        summary="List your chats",
        description="Root chats, newest first. `?parent=<id>` lists that chat's children; `?archived=true` "
        "lists archived chats.",
        parameters=[ChatListQuerySerializer],
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Chat]:
        query = ChatListQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        chats = chats_for_user(user=request_user(self.request))
        if parent := query.validated_data.get("parent"):
            return chats.filter(parent_id=parent)
        return chats.filter(parent__isnull=True, archived=query.validated_data["archived"])

    @extend_schema(
        summary="Create a chat",
        description="With `message`, the first user message is stored and a turn is queued (`pending`). "
        "Without `workspace_agent`, your most recently seen connected agent is used, if any.",
        request=ChatCreateSerializer,
        responses={201: ChatSerializer},
    )
    def post(self, request: Request) -> Response:
        data = ChatCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        if data.validated_data.get("message"):
            require_turn_queue()  # 503 before anything is stored, so a client's retry duplicates nothing
        chat = services.chat_create(owner=request_user(request), **data.validated_data)
        return Response(ChatSerializer(chat).data, status=status.HTTP_201_CREATED)


class ChatDetailView(APIView):
    @extend_schema(summary="Get a chat", responses={200: ChatSerializer})
    def get(self, request: Request, pk: str) -> Response:
        return Response(ChatSerializer(chat_for_user(user=request_user(request), chat_id=pk)).data)

    @extend_schema(
        summary="Rename or archive a chat", request=ChatUpdateSerializer, responses={200: ChatSerializer}
    )
    def patch(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        data = ChatUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        chat = services.chat_update(chat=chat, **data.validated_data)
        return Response(ChatSerializer(chat).data)

    @extend_schema(summary="Delete a chat and its child chats", responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        chat.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class ChatMessagesView(APIView):
    @extend_schema(
        summary="List a chat's messages",
        description="Messages in id order after `after_id` (a cursor: pass the last id you have).",
        parameters=[MessageListQuerySerializer],
        responses={200: MessageSerializer(many=True)},
    )
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        query = MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        messages = chat.messages.filter(id__gt=query.validated_data["after_id"]).order_by("id")
        return Response([message_to_json(m) for m in messages[: query.validated_data["limit"]]])

    @extend_schema(
        summary="Send a message",
        description="Stored at once; starts a turn, or is handled after the running one.",
        request=MessageCreateSerializer,
        responses={202: MessageSerializer},
    )
    def post(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        data = MessageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        require_turn_queue()  # 503 before anything is stored, so a client's retry duplicates nothing
        message = services.chat_send_message(chat=chat, content=data.validated_data["content"])
        return Response(message_to_json(message), status=status.HTTP_202_ACCEPTED)


class ChatEventsView(APIView):
    @extend_schema(
        summary="List a chat's audit events",
        description="Who did what on the chat's desktop and when: model actions, control changes, help requests "
        "and approvals, in id order after `after_id` (a cursor: pass the last id you have).",
        parameters=[MessageListQuerySerializer],
        responses={200: AuditEventSerializer(many=True)},
    )
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        query = MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        events = chat.audit_events.select_related("user").filter(id__gt=query.validated_data["after_id"])
        return Response(
            [audit_event_to_json(e) for e in events.order_by("id")[: query.validated_data["limit"]]]
        )


class ChatChildrenView(APIView):
    @extend_schema(summary="List a chat's child chats", responses={200: ChatSerializer(many=True)})
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        children = Chat.objects.filter(parent=chat).order_by("created_at")
        return Response(ChatSerializer(children, many=True).data)


class ChatInterruptView(APIView):
    @extend_schema(
        summary="Interrupt the running turn",
        description="The turn stops at its next safe point and the chat becomes `paused` "
        "(`paused_reason`: `interrupted`); what the model produced so far is kept.",
        request=None,
        responses={202: ChatSerializer},
    )
    def post(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        chat = services.chat_interrupt(chat=chat)
        return Response(ChatSerializer(chat).data, status=status.HTTP_202_ACCEPTED)


class ChatFileView(APIView):
    @extend_schema(
        summary="Download a chat file (screenshots)",
        responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY), 404: OpenApiResponse()},
        parameters=[OpenApiParameter("file_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
    )
    def get(self, request: Request, pk: str, file_id: str) -> FileResponse:
        chat_file = chat_file_for_user(user=request_user(request), chat_id=pk, file_id=file_id)
        response = FileResponse(chat_file.file.open("rb"), content_type=chat_file.content_type)
        response["Cache-Control"] = "private, max-age=86400, immutable"
        response["X-Content-Type-Options"] = "nosniff"
        return response
