"""REST endpoints for chats, their messages and files. Thin: validate, call a service, serialize."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatdesk.auth import request_user
from chatdesk.celery import require_turn_queue
from chats import services
from chats.approvals import approval_decide
from chats.engine.compaction import compaction_request
from chats.models import Approval, Chat, ChatFile
from chats.selectors import chat_file_for_user, chat_for_user, chats_for_user
from chats.serializers import (
    ApprovalDecisionSerializer,
    ApprovalListQuerySerializer,
    ApprovalSerializer,
    AuditEventSerializer,
    ChatCreateSerializer,
    ChatListQuerySerializer,
    ChatSerializer,
    ChatUpdateSerializer,
    MessageCreateSerializer,
    MessageListQuerySerializer,
    MessageSerializer,
    RecordingSerializer,
    TimelineEntrySerializer,
    approval_to_json,
    audit_event_to_json,
    message_to_json,
)
from chats.timeline import chat_recordings, chat_timeline, recording_to_json

RANGE_CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
EXPIRED = "This file expired (CHATDESK_FILE_RETENTION_DAYS) and is no longer stored."
MISSING = "This file is no longer stored."


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
        summary="Rename, archive, re-budget a chat or change its approval policy",
        description="`budget_usd` (root chats only; null: no budget) caps what the chat's tree may spend "
        "on model calls. Raising it does not resume a chat paused for its budget: `POST …/resume` does. "
        "`approval_policy` (root chats only: a child follows its root) applies to the tree's next actions.",
        request=ChatUpdateSerializer,
        responses={200: ChatSerializer},
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
        services.chat_delete(chat=chat)
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


_CONFLICT = OpenApiResponse(description='`{"detail": …}` says why (see the description).')


class ChatResumeView(APIView):
    @extend_schema(
        summary="Resume a paused chat",
        description="Continues a chat paused because it was interrupted (no new message needed) or reached "
        "its budget (raise `budget_usd` first; every chat of the tree paused for the budget resumes, exactly "
        "where it stopped). 409 when the chat is not paused, when its budget is still reached, or when it is "
        "paused for a reason only a person's action lifts (`taken_over`, `needs_help`, `awaiting_approval`).",
        request=None,
        responses={202: ChatSerializer, 409: _CONFLICT},
    )
    def post(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        chat = services.chat_resume(chat=chat)
        return Response(ChatSerializer(chat).data, status=status.HTTP_202_ACCEPTED)


class ChatCompactView(APIView):
    @extend_schema(
        summary="Compact a chat's history now",
        description="The older history is summarized by the chat's model into one visible message (role "
        "`system`, a `summary` part) that replaces it in later requests; the newest messages stay as they "
        "are and a tool call is never separated from its result. Runs in the background (the summary "
        "arrives on the stream). 409 with the reason when there is too little history, a compaction is "
        "already running or the budget is reached.",
        request=None,
        responses={202: ChatSerializer, 409: _CONFLICT},
    )
    def post(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        chat = compaction_request(chat=chat)
        return Response(ChatSerializer(chat).data, status=status.HTTP_202_ACCEPTED)


class ChatFileView(APIView):
    @extend_schema(
        summary="Download a chat file (screenshots, recordings)",
        description="Owner only. Answers HTTP Range requests (`Range: bytes=START-END`, one range) with 206 and "
        "`Content-Range`, so a video can be seeked; 416 for a range outside the file. 404 when the file expired "
        "(CHATDESK_FILE_RETENTION_DAYS) or is missing from storage.",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            (206, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="A byte range."
            ),
            404: OpenApiResponse(),
            416: OpenApiResponse(description="The range is outside the file."),
        },
        parameters=[OpenApiParameter("file_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
    )
    def get(self, request: Request, pk: str, file_id: str) -> HttpResponseBase:
        chat_file = chat_file_for_user(user=request_user(request), chat_id=pk, file_id=file_id)
        return file_response(chat_file, request.headers.get("Range"))


def file_response(chat_file: ChatFile, range_header: str | None) -> HttpResponseBase:
    """Return the file's bytes, all of them or the one range asked for. Raise NotFound when they are gone."""
    if chat_file.expired_at is not None or not chat_file.file.name:
        raise NotFound(EXPIRED if chat_file.expired_at is not None else MISSING)
    try:
        handle = chat_file.file.open("rb")
        size = chat_file.file.size
    except (FileNotFoundError, OSError):
        raise NotFound(MISSING) from None
    byte_range = _parse_range(range_header, size) if range_header else None
    response: HttpResponseBase
    if byte_range is None:
        response = FileResponse(handle, content_type=chat_file.content_type)
    elif byte_range == (-1, -1):
        handle.close()
        response = HttpResponse(status=status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE)
        response["Content-Range"] = f"bytes */{size}"
        return response
    else:
        start, end = byte_range
        response = StreamingHttpResponse(
            _read_range(handle, start, end - start + 1),
            status=status.HTTP_206_PARTIAL_CONTENT,
            content_type=chat_file.content_type,
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=86400, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return (first, last) byte of a single ``bytes=`` range; (-1, -1) when it is unsatisfiable; None to
    ignore the header (malformed or several ranges: the whole file is sent, as RFC 9110 allows)."""
    match = _RANGE_RE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # a suffix: the last N bytes
        length = int(match[2])
        if length == 0 or size == 0:
            return (-1, -1)
        return max(0, size - length), size - 1
    start = int(match[1])
    if start >= size:
        return (-1, -1)
    end = int(match[2]) if match[2] else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


def _read_range(handle: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        while length > 0:
            chunk = handle.read(min(RANGE_CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
    finally:
        handle.close()


class ChatRecordingsView(APIView):
    @extend_schema(
        summary="List a chat's recordings",
        description="Videos of the chat's desktop (WebM, VP8): `model` while its turns worked on the desktop, "
        "`person` while a person held it. `url` answers Range requests; `complete` is false when the recorder "
        "stopped early (`note` says why); `url` is null until the file is stored and once it expired.",
        responses={200: RecordingSerializer(many=True), 404: OpenApiResponse()},
    )
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        return Response([recording_to_json(r) for r in chat_recordings(chat=chat)])


class ChatTimelineView(APIView):
    @extend_schema(
        summary="The timeline of a chat's actions",
        description="Every computer action of the chat (and every change of control of its desktop), in time "
        "order, with the recording it happened in and `t`, its offset in seconds into that recording.",
        responses={200: TimelineEntrySerializer(many=True), 404: OpenApiResponse()},
    )
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        return Response(chat_timeline(chat=chat))


def _approvals(query: QuerySet[Approval], params: object) -> list[dict[str, object]]:
    """Return the approvals of ``query`` filtered by the query parameters, newest first, as JSON."""
    data = ApprovalListQuerySerializer(data=params)
    data.is_valid(raise_exception=True)
    if state := data.validated_data.get("state"):
        query = query.filter(state=state)
    query = query.select_related("screenshot", "decided_by").order_by("-created_at", "-id")
    return [approval_to_json(a) for a in query[: data.validated_data["limit"]]]


class ApprovalListView(APIView):
    @extend_schema(
        summary="Your approvals inbox",
        description="The approvals of the chats you own, newest first: computer actions that wait (or "
        "waited) for a person's decision. `?state=pending` lists those still waiting.",
        parameters=[ApprovalListQuerySerializer],
        responses={200: ApprovalSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return Response(
            _approvals(Approval.objects.filter(chat__owner=request_user(request)), request.query_params)
        )


class ChatApprovalsView(APIView):
    @extend_schema(
        summary="List a chat's approvals",
        description="The approvals of this chat, newest first; for a root chat, those of its whole tree "
        "(its child chats' too).",
        parameters=[ApprovalListQuerySerializer],
        responses={200: ApprovalSerializer(many=True), 404: OpenApiResponse()},
    )
    def get(self, request: Request, pk: str) -> Response:
        chat = chat_for_user(user=request_user(request), chat_id=pk)
        rows = Approval.objects.filter(root_chat=chat) if chat.is_root else Approval.objects.filter(chat=chat)
        return Response(_approvals(rows, request.query_params))


class ApprovalDetailView(APIView):
    @extend_schema(
        summary="Get an approval",
        responses={200: ApprovalSerializer, 404: OpenApiResponse()},
        parameters=[OpenApiParameter("pk", OpenApiTypes.UUID, OpenApiParameter.PATH)],
    )
    def get(self, request: Request, pk: str) -> Response:
        approval = get_object_or_404(
            Approval.objects.select_related("screenshot", "decided_by"),
            pk=pk,
            chat__owner=request_user(request),
        )
        return Response(approval_to_json(approval))

    @extend_schema(
        summary="Approve or deny an action",
        description="Decides a pending approval once: `approve` runs the action (exactly once), `deny` gives "
        "the model an error result with your `note`. The chat then goes on. 409 with the approval's "
        "`state` when it was already decided (or expired: CHATDESK_APPROVAL_TIMEOUT_SECONDS).",
        request=ApprovalDecisionSerializer,
        responses={
            200: ApprovalSerializer,
            404: OpenApiResponse(),
            409: OpenApiResponse(description='`{"detail": …, "state": …}`: the approval is already decided.'),
        },
        parameters=[OpenApiParameter("pk", OpenApiTypes.UUID, OpenApiParameter.PATH)],
    )
    def post(self, request: Request, pk: str) -> Response:
        data = ApprovalDecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        approval = approval_decide(
            approval_id=pk,
            user=request_user(request),
            decision=data.validated_data["decision"],
            note=data.validated_data["note"],
        )
        return Response(approval_to_json(approval))
