from __future__ import annotations

from django.urls import path

from desktop import api

urlpatterns = [
    path(
        "chats/<uuid:pk>/desktop/screenshot", api.DesktopScreenshotView.as_view(), name="desktop-screenshot"
    ),
    path("chats/<uuid:pk>/desktop/control", api.DesktopControlView.as_view(), name="desktop-control"),
    path("chats/<uuid:pk>/desktop/takeover", api.DesktopTakeoverView.as_view(), name="desktop-takeover"),
    path("chats/<uuid:pk>/desktop/handback", api.DesktopHandbackView.as_view(), name="desktop-handback"),
]
