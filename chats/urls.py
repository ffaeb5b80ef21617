from django.urls import path

from chats import api

urlpatterns = [
    path("chats", api.ChatListView.as_view(), name="chat-list-api"),
    path("chats/<uuid:pk>", api.ChatDetailView.as_view(), name="chat-detail-api"),
    path("chats/<uuid:pk>/messages", api.ChatMessagesView.as_view(), name="chat-messages"),
    path("chats/<uuid:pk>/events", api.ChatEventsView.as_view(), name="chat-events"),
    path("chats/<uuid:pk>/children", api.ChatChildrenView.as_view(), name="chat-children"),
    path("chats/<uuid:pk>/interrupt", api.ChatInterruptView.as_view(), name="chat-interrupt"),
    path("chats/<uuid:pk>/resume", api.ChatResumeView.as_view(), name="chat-resume"),
    path("chats/<uuid:pk>/compact", api.ChatCompactView.as_view(), name="chat-compact"),
    path("chats/<uuid:pk>/files/<uuid:file_id>", api.ChatFileView.as_view(), name="chat-file"),
    path("chats/<uuid:pk>/recordings", api.ChatRecordingsView.as_view(), name="chat-recordings"),
    path("chats/<uuid:pk>/timeline", api.ChatTimelineView.as_view(), name="chat-timeline"),
    path("chats/<uuid:pk>/approvals", api.ChatApprovalsView.as_view(), name="chat-approvals"),
    path("approvals", api.ApprovalListView.as_view(), name="approval-list"),
    path("approvals/<uuid:pk>", api.ApprovalDetailView.as_view(), name="approval-detail"),
]
