from __future__ import annotations

from typing import Any

from rest_framework import serializers

from agents.models import WorkspaceAgent
from agents.services import agent_url_check
from chatdesk.exceptions import ValidationError
from chatdesk.serializers import StrictCharField, StrictSerializer

MAX_DISPLAY_PX = 16384


class DisplaySerializer(StrictSerializer):
    width = serializers.IntegerField(min_value=1, max_value=MAX_DISPLAY_PX)
    height = serializers.IntegerField(min_value=1, max_value=MAX_DISPLAY_PX)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("width", "height"):
                if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
                    raise serializers.ValidationError({key: ["Must be an integer."]})
        return super().to_internal_value(data)


class WorkspaceAgentSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=WorkspaceAgent.Status.choices, read_only=True)
    display = serializers.SerializerMethodField()
    desktop_held = serializers.SerializerMethodField()

    class Meta:
        model = WorkspaceAgent
        fields = ["id", "name", "status", "url", "display", "last_seen", "desktop_held", "created_at"]
        read_only_fields = fields

    def get_display(self, agent: WorkspaceAgent) -> dict[str, int] | None:
        if agent.display_width and agent.display_height:
            return {"width": agent.display_width, "height": agent.display_height}
        return None

    def get_desktop_held(self, agent: WorkspaceAgent) -> bool:
        return agent.desktop_held_by_id is not None


class WorkspaceAgentCreatedSerializer(WorkspaceAgentSerializer):
    token = serializers.CharField(read_only=True, help_text="The agent's token. Shown only in this response.")

    class Meta(WorkspaceAgentSerializer.Meta):
        fields = [*WorkspaceAgentSerializer.Meta.fields, "token"]
        read_only_fields = fields


class WorkspaceAgentCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=100)


class HeartbeatSerializer(StrictSerializer):
    url = StrictCharField(max_length=500, help_text="Where the server reaches the agent (ws:// or wss://).")
    display = DisplaySerializer()
    stopping = serializers.BooleanField(
        required=False, default=False, help_text="The agent is stopping: show it disconnected at once."
    )

    def validate_url(self, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise serializers.ValidationError("Must be a ws:// or wss:// URL.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("stopping"):
            try:
                agent_url_check(attrs["url"])
            except ValidationError as exc:
                raise serializers.ValidationError({"url": [exc.message]}) from None
        return attrs


class HeartbeatResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
