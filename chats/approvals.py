"""Approvals: a computer action that waits for a person's decision (SPEC §8 "Approvals").

The life of an approval
-----------------------
1. **Gated?** Before a computer action runs, the computer tool asks :func:`approval_required`. The policy
   is the *root* chat's ``approval_policy`` (children follow their root): ``off`` gates nothing, ``risky``
   the members the Anthropic SDK's computer toolset asks a confirmation for (``type``, ``key``,
   ``hold_key``: keyboard input goes to whichever window has focus), ``all`` every action but those that
   only look or wait (:data:`NEVER_GATED`).
2. **Created.** A gated action takes a screenshot, marks the target point on it
   (:func:`approval_mark_target`), stores it as a ChatFile and calls :func:`approval_create` — idempotent
   per ``(chat, tool_use_id)``, so a turn that runs again finds the same approval — and the chat pauses
   (``awaiting_approval``) without holding a worker. An ``approval`` audit event (state ``pending``, by the
   model) goes to the chat's stream and its root's, so both pages show the card.
3. **Decided.** ``POST /approvals/{id}`` (:func:`approval_decide`) moves it ``pending`` -> ``approved`` |
   ``denied`` once (a second decision is a 409 with the state it has); or, undecided for
   CHATDESK_APPROVAL_TIMEOUT_SECONDS, :func:`approvals_expire` (Celery beat) moves it to ``expired`` (by
   the system; counts as denied). Either way an ``approval`` audit event says so.
4. **Resumed.** The decision queues the chat's turn, if the chat is paused for ``awaiting_approval``. A chat
   paused for another reason meanwhile (a person interrupted it) stays paused: its own resume answers from
   the decision. The turn then answers the tool_use from :func:`approval_for`: approved runs the action
   exactly once, anything else gives the model an error result with the note.

The state changes here and only here, with a conditional update under the row's lock; the audit row and
the live event are written in the same transaction, so they exist exactly when the change does.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone
from PIL import Image, ImageDraw, UnidentifiedImageError

from agents.daemon.actionspec import ACTIONS, CONFIRM_REQUIRED
from chatdesk.exceptions import Conflict, ValidationError
from chats.audit import audit_record
from chats.models import Approval, AuditEvent, Chat, ChatFile
from chats.selectors import chat_approval_policy
from chats.services import chat_queue_turn

__all__ = [
    "GATED",
    "NEVER_GATED",
    "approval_create",
    "approval_decide",
    "approval_for",
    "approval_mark_target",
    "approval_required",
    "approvals_expire",
]

P = Chat.ApprovalPolicy
S = Approval.State

#: Actions that only look or wait: never gated, whatever the policy.
NEVER_GATED = frozenset({"screenshot", "zoom", "cursor_position", "mouse_move", "wait"})
#: The actions each policy gates.
GATED: dict[str, frozenset[str]] = {
    P.OFF: frozenset(),
    P.RISKY: frozenset(CONFIRM_REQUIRED),
    P.ALL: frozenset(ACTIONS) - NEVER_GATED,
}

#: The note of an approval that expired (for the model, with the denial).
EXPIRED_NOTE = "Nobody decided in time."
#: What a decision moves a pending approval to.
DECIDED: dict[str, str] = {Approval.Decision.APPROVE: S.APPROVED, Approval.Decision.DENY: S.DENIED}


#: Why a decision comes too late, by the state the approval has.
ALREADY: dict[str, str] = {
    S.APPROVED: "This approval is already approved: a decision is made once.",
    S.DENIED: "This approval is already denied: a decision is made once.",
    S.EXPIRED: "This approval expired: nobody decided in time (CHATDESK_APPROVAL_TIMEOUT_SECONDS), so the "
    "action was denied.",
}


def approval_required(*, chat: Chat, action: str) -> bool:
    """Return whether ``action`` of ``chat`` must wait for a person's approval (its root's policy)."""
    return action in GATED.get(chat_approval_policy(chat), frozenset())


def _audit(approval: Approval, *, chat: Chat, actor: str, user: User | None = None) -> None:
    audit_record(
        chat=chat,
        kind=AuditEvent.Kind.APPROVAL,
        actor=actor,
        user=user,
        data={
            "approval_id": str(approval.pk),
            "state": approval.state,
            "action": approval.action,
            "note": approval.note,
        },
        also_to=[chat.root_id],
    )


@transaction.atomic
def approval_create(
    *,
    chat: Chat,
    tool_use_id: str,
    action: str,
    tool_input: dict[str, Any],
    screenshot: ChatFile | None,
) -> Approval:
    """Return the approval of ``chat``'s ``tool_use_id``, created pending (with an audit event) when there
    is none yet. A second call for the same tool_use returns the first approval, whatever its state."""
    approval, created = Approval.objects.get_or_create(
        chat=chat,
        tool_use_id=tool_use_id,
        defaults={
            "root_chat_id": chat.root_id,
            "action": action,
            "input": tool_input,
            "screenshot": screenshot,
        },
    )
    if created:
        _audit(approval, chat=chat, actor=AuditEvent.Actor.MODEL)
    return approval


def approval_for(*, chat: Chat, tool_use_id: str) -> Approval | None:
    """Return the approval of ``chat``'s ``tool_use_id``, or None when the action was not gated."""
    return Approval.objects.filter(chat=chat, tool_use_id=tool_use_id).first()


def _resume(chat_id: UUID | str) -> None:
    """Queue the turn of the chat when it is paused for ``awaiting_approval`` (and only then).

    The chat's row is locked first, so its pause cannot change between the check and the move.
    """
    chat = Chat.objects.select_for_update().get(pk=chat_id)
    if chat.status == Chat.Status.PAUSED and chat.paused_reason == Chat.PausedReason.AWAITING_APPROVAL:
        chat_queue_turn(chat=chat)


def _move(approval: Approval, *, to: str, decided_by: User | None, note: str) -> None:
    """Move the locked, pending ``approval`` to ``to`` with one conditional update (and update it in place).

    The row lock already keeps others out; the condition says the rule where the write is."""
    fields = {"state": to, "decided_by": decided_by, "note": note, "decided_at": timezone.now()}
    moved = Approval.objects.filter(pk=approval.pk, state=S.PENDING).update(**fields)
    assert moved == 1, f"approval {approval.pk} was not pending under its lock"
    for name, value in fields.items():
        setattr(approval, name, value)


@transaction.atomic
def approval_decide(*, approval_id: UUID | str, user: User, decision: str, note: str = "") -> Approval:
    """Approve or deny a pending approval of one of ``user``'s chats, and resume its chat.

    Return the approval as decided. Raise ValidationError for a decision other than approve or deny,
    Http404 for an approval of another user's chat (as for one that does not exist), Conflict (409, with
    ``state``) when it is no longer pending.
    """
    approval = get_object_or_404(
        Approval.objects.select_for_update(of=("self",)).select_related("chat"),
        pk=approval_id,
        chat__owner=user,
    )
    if decision not in DECIDED:
        raise ValidationError(f"decision must be approve or deny, not {decision!r}.")
    if approval.state != S.PENDING:
        raise Conflict(ALREADY[approval.state], extra={"state": approval.state})
    _move(approval, to=DECIDED[decision], decided_by=user, note=note)
    _audit(approval, chat=approval.chat, actor=AuditEvent.Actor.PERSON, user=user)
    _resume(approval.chat_id)
    return approval


def approvals_expire() -> int:
    """Expire the pending approvals older than CHATDESK_APPROVAL_TIMEOUT_SECONDS and resume their chats
    (Celery beat). Return how many expired.

    Each expires in its own transaction; one another actor holds (being decided) is skipped: its decision
    wins. Also queues the chats still paused for ``awaiting_approval`` although their newest approval was
    decided: a decision made before the turn finished pausing would otherwise leave them waiting forever.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.CHATDESK_APPROVAL_TIMEOUT_SECONDS)
    expired = 0
    stale = Approval.objects.filter(state=S.PENDING, created_at__lt=cutoff).order_by("created_at")
    for approval_id in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            approval = (
                Approval.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("chat")
                .filter(pk=approval_id, state=S.PENDING)
                .first()
            )
            if approval is None:
                continue
            _move(approval, to=S.EXPIRED, decided_by=None, note=EXPIRED_NOTE)
            _audit(approval, chat=approval.chat, actor=AuditEvent.Actor.SYSTEM)
            _resume(approval.chat_id)
            expired += 1
    newest_state = Subquery(
        Approval.objects.filter(chat=OuterRef("pk")).order_by("-created_at").values("state")[:1]
    )
    stranded = (
        Chat.objects.filter(status=Chat.Status.PAUSED, paused_reason=Chat.PausedReason.AWAITING_APPROVAL)
        .annotate(newest_state=newest_state)
        .exclude(newest_state=S.PENDING)
        .exclude(newest_state__isnull=True)
    )
    for chat_id in list(stranded.values_list("pk", flat=True)):
        with transaction.atomic():
            _resume(chat_id)
    return expired


# The mark: a ring around the target and a crosshair through it, red with a white outline so it shows on
# dark and light screens alike. Sizes scale with the screenshot.
MARK_COLOR = (230, 20, 20, 255)
MARK_OUTLINE = (255, 255, 255, 255)


def approval_mark_target(png: bytes, point: tuple[int, int] | None) -> bytes:
    """Return ``png`` with ``point`` (in its pixels) marked by a ring and a crosshair, as a PNG.

    Return ``png`` unchanged when ``point`` is None. Raise ValueError when ``png`` is not an image.
    """
    if point is None:
        return png
    try:
        with Image.open(io.BytesIO(png)) as opened:
            image = opened.convert("RGBA")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("The screenshot is not a readable image.") from exc
    x, y = point
    radius = max(10, min(image.width, image.height) // 24)
    width = max(2, radius // 4)
    draw = ImageDraw.Draw(image)
    for color, grow in ((MARK_OUTLINE, 2), (MARK_COLOR, 0)):
        line = width + grow
        box = (x - radius - grow // 2, y - radius - grow // 2, x + radius + grow // 2, y + radius + grow // 2)
        draw.ellipse(box, outline=color, width=line)
        arm = radius * 2
        draw.line((x - arm, y, x - radius // 2, y), fill=color, width=max(1, line // 2 + grow // 2))
        draw.line((x + radius // 2, y, x + arm, y), fill=color, width=max(1, line // 2 + grow // 2))
        draw.line((x, y - arm, x, y - radius // 2), fill=color, width=max(1, line // 2 + grow // 2))
        draw.line((x, y + radius // 2, x, y + arm), fill=color, width=max(1, line // 2 + grow // 2))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()
