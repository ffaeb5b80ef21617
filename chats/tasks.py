"""Celery tasks of the turn engine: thin, they take ids and call one service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="chats.run_turn", acks_late=True, ignore_result=True)
def run_turn(chat_id: str) -> None:
    from chats.engine import turn_run

    turn_run(chat_id=chat_id)
