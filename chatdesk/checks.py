"""System checks for rules that span settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_settings(app_configs: Any, **kwargs: Any) -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    if settings.CHATDESK_KEEP_SCREENSHOTS < 1:
        problems.append(
            Warning(
                "CHATDESK_KEEP_SCREENSHOTS is 0: computer-use models will never see a screenshot.",
                id="chatdesk.W001",
            )
        )
    if not settings.DEBUG and settings.SECRET_KEY.startswith("django-insecure"):
        problems.append(Error("SECRET_KEY is an insecure development key.", id="chatdesk.E001"))
    if settings.REDIS_URL and not settings.REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        problems.append(
            Error("REDIS_URL must start with redis://, rediss:// or unix://.", id="chatdesk.E002")
        )
    if settings.CHATDESK_TURN_LEASE_SECONDS <= settings.CHATDESK_SWEEP_INTERVAL:
        problems.append(
            Warning(
                "CHATDESK_TURN_LEASE_SECONDS is shorter than CHATDESK_SWEEP_INTERVAL: live turns may be swept.",
                id="chatdesk.W002",
            )
        )
    if settings.CHATDESK_BASH_TIMEOUT_SECONDS >= settings.CHATDESK_TURN_TIME_LIMIT:
        problems.append(
            Warning(
                "CHATDESK_BASH_TIMEOUT_SECONDS is not shorter than CHATDESK_TURN_TIME_LIMIT: a turn may be "
                "stopped while a bash command runs, before the command's own timeout.",
                id="chatdesk.W003",
            )
        )
    return problems
