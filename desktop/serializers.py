"""Serializers of the desktop endpoints (requests strict: unknown fields and wrong types are 400)."""

from __future__ import annotations

from rest_framework import serializers

from agents.models import DesktopHolder
from chatdesk.serializers import StrictCharField, StrictSerializer
from desktop.client import THUMBNAIL_MAX, THUMBNAIL_MIN

MAX_NOTE_CHARS = 2000


class ScreenshotQuerySerializer(StrictSerializer):
    width = serializers.IntegerField(
        required=False,
        min_value=THUMBNAIL_MIN,
        max_value=THUMBNAIL_MAX,
        help_text="Scale the screenshot to this width in pixels, keeping the aspect ratio.",
    )


class TakeoverSerializer(StrictSerializer):
    """No fields: the body may be empty or ``{}``."""


class HandbackSerializer(StrictSerializer):
    note = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=MAX_NOTE_CHARS,
        help_text="What you did on the desktop; passed to the model.",
    )


class DesktopControlSerializer(serializers.Serializer):
    """Who controls the desktop (``desktop.control.ControlState``)."""

    holder = serializers.ChoiceField(
        choices=DesktopHolder.choices,
        allow_null=True,
        help_text="`model` (the agent's computer-use chats), `person` (a user who took control) or null "
        "(nobody). Only the person holding the desktop can send it input through the live desktop.",
    )
    user = serializers.CharField(
        allow_null=True, help_text="The username of the person holding the desktop; null otherwise."
    )
    since = serializers.DateTimeField(
        allow_null=True, help_text="When the holder last changed; null if it never did."
    )
