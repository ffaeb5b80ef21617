from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from agents.services import workspace_agent_create
from chatdesk.exceptions import ChatdeskError


class Command(BaseCommand):
    help = "Register a workspace agent and print its token (shown only this once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--owner", required=True, help="Username of the agent's owner.")
        parser.add_argument("--name", required=True, help="A name for the agent, unique per owner.")

    def handle(self, *args: Any, owner: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user named {owner!r}.")
        try:
            _, raw = workspace_agent_create(owner=user, name=name)
        except ChatdeskError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(raw)
