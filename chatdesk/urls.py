from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from chatdesk import api

api_patterns: list[URLPattern | URLResolver] = [
    path("", include("chats.urls")),
    path("", include("desktop.urls")),
    path("", include("agents.urls")),
    path("tokens", api.ApiTokenListView.as_view(), name="token-list-api"),
    path("tokens/<int:pk>", api.ApiTokenDetailView.as_view(), name="token-detail-api"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/experimental/", include(api_patterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("chatdesk.page_urls")),
]

handler404 = "chatdesk.api.json_not_found"
handler500 = "chatdesk.api.json_server_error"
