from django.urls import path

from agents import api

urlpatterns = [
    path("workspace-agents", api.WorkspaceAgentListView.as_view(), name="workspace-agent-list-api"),
    path("workspace-agents/heartbeat", api.HeartbeatView.as_view(), name="workspace-agent-heartbeat"),
    path(
        "workspace-agents/<uuid:pk>",
        api.WorkspaceAgentDetailView.as_view(),
        name="workspace-agent-detail-api",
    ),
]
