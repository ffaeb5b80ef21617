"""Request serializers of the desktop endpoints (strict: unknown fields and wrong types are 400)."""

from __future__ import annotations

from rest_framework import serializers

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
