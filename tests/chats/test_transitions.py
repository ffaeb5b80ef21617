"""chats/transitions.py: the table of allowed moves, the one conditional update, and that no other
module writes ``Chat.status``."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from chats.models import Chat, ChatEvent
from chats.transitions import MOVES, IllegalTransition, chat_transition
from tests.factories import ChatFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
S = Chat.Status
R = Chat.PausedReason
ILLEGAL_MOVES = sorted(set(itertools.product(S.values, S.values)) - set(MOVES))


@pytest.fixture(autouse=True)
def embedded_events(settings: Settings) -> None:
    """Events become ChatEvent rows (the embedded default), so a test can read what was published."""
    settings.REDIS_URL = ""


def chat_in(user: User, status: str, **fields: Any) -> Chat:
    return ChatFactory.create(owner=user, status=status, **fields)


def published_statuses(chat: Chat) -> list[dict[str, Any]]:
    return [e.payload for e in ChatEvent.objects.filter(chat=chat) if e.payload["type"] == "status"]


@pytest.mark.parametrize(("before", "after"), sorted(MOVES))
def test_every_allowed_move_works_through_the_helper(
    user: User, before: str, after: str, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    chat = chat_in(user, before)
    reason = R.TAKEN_OVER if after == S.PAUSED else None
    with django_capture_on_commit_callbacks(execute=True):
        moved = chat_transition(chat_id=chat.pk, to=after, expect=[before], reason=reason)
    assert moved is not None and (moved.status, moved.paused_reason) == (after, reason)
    chat.refresh_from_db()
    assert (chat.status, chat.paused_reason) == (after, reason)
    assert published_statuses(chat) == [
        {"type": "status", "status": after, "paused_reason": reason, "last_error": ""}
    ]


@pytest.mark.parametrize(("before", "after"), ILLEGAL_MOVES)
def test_every_move_not_in_the_table_raises(user: User, before: str, after: str) -> None:
    chat = chat_in(user, before)
    reason = R.INTERRUPTED if after == S.PAUSED else None
    with pytest.raises(IllegalTransition, match=f"{before} -> {after}"):
        chat_transition(chat_id=chat.pk, to=after, expect=[before], reason=reason)
    chat.refresh_from_db()
    assert chat.status == before


def test_the_table_knows_every_status_and_only_statuses() -> None:
    assert {status for move in MOVES for status in move} == set(S.values)
    assert ILLEGAL_MOVES, "some moves must stay illegal (e.g. waiting -> running)"
    assert (S.WAITING, S.RUNNING) in ILLEGAL_MOVES and (S.PAUSED, S.RUNNING) in ILLEGAL_MOVES


def test_a_move_to_paused_needs_a_known_reason_and_no_other_move_takes_one(user: User) -> None:
    chat = chat_in(user, S.RUNNING)
    with pytest.raises(IllegalTransition):
        chat_transition(chat_id=chat.pk, to=S.PAUSED, expect=[S.RUNNING])
    with pytest.raises(IllegalTransition):
        chat_transition(chat_id=chat.pk, to=S.PAUSED, expect=[S.RUNNING], reason="bored")
    with pytest.raises(IllegalTransition):
        chat_transition(chat_id=chat.pk, to=S.WAITING, expect=[S.RUNNING], reason=R.INTERRUPTED)
    with pytest.raises(IllegalTransition):
        chat_transition(chat_id=chat.pk, to=S.WAITING, expect=[S.RUNNING], status=S.ERROR)
    with pytest.raises(IllegalTransition):
        chat_transition(chat_id=chat.pk, to=S.WAITING, expect=[])
    chat.refresh_from_db()
    assert (chat.status, chat.paused_reason) == (S.RUNNING, None)


def test_leaving_paused_clears_the_reason(user: User) -> None:
    chat = chat_in(user, S.PAUSED, paused_reason=R.NEEDS_HELP)
    queued = chat_transition(chat_id=chat.pk, to=S.PENDING, expect=[S.PAUSED])
    assert queued is not None and queued.paused_reason is None


def test_a_chat_another_actor_moved_first_is_left_alone(user: User) -> None:
    chat = chat_in(user, S.RUNNING, worker_id="worker-a")
    # Not in the expected state: someone (an interrupt) moved it first.
    assert chat_transition(chat_id=chat.pk, to=S.RUNNING, expect=[S.PENDING]) is None
    # In the expected state, but the condition does not hold: another worker owns the turn.
    assert chat_transition(chat_id=chat.pk, to=S.WAITING, expect=[S.RUNNING], where=Q(worker_id="b")) is None
    chat.refresh_from_db()
    assert chat.status == S.RUNNING and published_statuses(chat) == []
    ended = chat_transition(
        chat_id=chat.pk, to=S.ERROR, expect=[S.RUNNING], where=Q(worker_id="worker-a"), last_error="Boom."
    )
    assert ended is not None and (ended.status, ended.last_error) == (S.ERROR, "Boom.")


def test_awaiting_is_kept_only_when_given(user: User) -> None:
    wait = {"tool_use_id": "t", "chat_id": "c", "deadline": "2100-01-01T00:00:00+00:00"}
    chat = chat_in(user, S.RUNNING)
    suspended = chat_transition(chat_id=chat.pk, to=S.PENDING, expect=[S.RUNNING], awaiting=wait)
    assert suspended is not None and suspended.awaiting == wait
    paused = chat_transition(chat_id=chat.pk, to=S.PAUSED, expect=[S.PENDING], reason=R.INTERRUPTED)
    assert paused is not None and paused.awaiting is None


def test_a_parent_waiting_on_the_child_is_woken_when_the_child_stops(
    user: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    parent = chat_in(user, S.PENDING)  # suspended in wait_agent on ``child``
    child = ChatFactory.create(owner=user, parent=parent, mode=Chat.Mode.COMPUTER_USE, status=S.RUNNING)
    other = ChatFactory.create(owner=user, parent=parent, mode=Chat.Mode.COMPUTER_USE, status=S.RUNNING)
    wait = {"tool_use_id": "t", "chat_id": str(child.pk), "deadline": "2100-01-01T00:00:00+00:00"}
    Chat.objects.filter(pk=parent.pk).update(awaiting=wait)

    def wakes(callbacks: list[Any]) -> int:
        return sum("_wake_waiting_parent" in c.__qualname__ for c in callbacks)

    with django_capture_on_commit_callbacks() as callbacks:
        chat_transition(chat_id=other.pk, to=S.COMPLETED, expect=[S.RUNNING])
    assert wakes(callbacks) == 0  # the parent does not wait for that one
    with django_capture_on_commit_callbacks() as callbacks:
        chat_transition(chat_id=child.pk, to=S.PAUSED, expect=[S.RUNNING], reason=R.TAKEN_OVER)
    assert wakes(callbacks) == 1  # its claim decides whether the wait is over (here: not yet)
    with django_capture_on_commit_callbacks() as callbacks:
        chat_transition(chat_id=child.pk, to=S.PENDING, expect=[S.PAUSED])
    assert wakes(callbacks) == 0  # working again: nothing to wake for


def test_the_database_refuses_a_reason_that_does_not_fit_the_status(user: User) -> None:
    chat = chat_in(user, S.WAITING)
    for status, reason in [(S.PAUSED, None), (S.WAITING, R.INTERRUPTED), (S.PAUSED, "bored")]:
        with pytest.raises(IntegrityError), transaction.atomic():
            Chat.objects.filter(pk=chat.pk).update(status=status, paused_reason=reason)


# --- no module but chats/transitions.py writes Chat.status -------------------------------------------------

#: Scanned: all the project's code but tests and migrations (history). Chat is the only model with a
#: ``status`` field, so any write of a ``status`` field is a write of Chat.status.
SCANNED = ("agents", "bench", "chatdesk", "chats", "desktop")
OWNER = ROOT / "chats" / "transitions.py"
QUERYSET_WRITES = {"update", "create", "get_or_create", "update_or_create", "bulk_create", "bulk_update"}


def _names_status(node: ast.AST) -> bool:
    """Return True when ``node`` is the string "status", or a list/tuple/set/dict (keys) holding it."""
    if isinstance(node, ast.Constant):
        return node.value == "status"
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return any(_names_status(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(k is not None and _names_status(k) for k in node.keys)
    return False


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Tuple | ast.List):
        return [t for e in node.elts for t in _targets(e)]
    return [node]


def status_writes(source: str, filename: str = "<source>") -> list[int]:
    """Return the lines of ``source`` that write a ``status`` field."""
    lines = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for a in targets for t in _targets(a)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            for keyword in node.keywords:
                if (
                    (keyword.arg == "status" and (name in QUERYSET_WRITES or name == "Chat"))
                    or (keyword.arg in ("update_fields", "defaults", "create_defaults", None)
                        and _names_status(keyword.value))
                ):  # fmt: skip
                    lines.append(node.lineno)
            if name == "setattr" and len(node.args) >= 2 and _names_status(node.args[1]):
                lines.append(node.lineno)
    return lines


def test_the_status_write_check_sees_every_kind_of_write() -> None:
    writes = """
chat.status = "paused"
a, chat.status = 1, "paused"
Chat.objects.filter(pk=1).update(status="error")
rows.update(**{"status": "error"})
Chat.objects.create(owner=u, status="pending")
Chat(owner=u, status="pending")
chat.save(update_fields=["status", "updated_at"])
Chat.objects.update_or_create(pk=1, defaults={"status": "waiting"})
setattr(chat, "status", "waiting")
"""
    assert status_writes(writes) == list(range(2, 11))
    reads = """
Chat.objects.filter(status="running").update(heartbeat_at=now)
Response(data, status=201)
render(request, "x.html", context, status=400)
status = serializers.ChoiceField(choices=[])
if chat.status == "paused": pass
chat.save(update_fields=["usage", "updated_at"])
"""
    assert status_writes(reads) == []


def test_no_module_but_transitions_writes_chat_status() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in SCANNED
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts and path != OWNER
        for line in status_writes(path.read_text(), str(path))
    ]
    assert offending == [], "Chat.status changes only through chats/transitions.py (chat_transition)"
    assert status_writes(OWNER.read_text()), "the check must see the owner's own write"
