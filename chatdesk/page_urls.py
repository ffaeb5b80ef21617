"""Web page routes. The pages themselves live with their apps (chats/views.py, agents/views.py)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from agents import views as agent_views
from chatdesk import views as account_views
from chats import views as chat_views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", chat_views.chat_list, name="chat-list"),
    path("chats/new/", chat_views.chat_new, name="chat-new"),
    path("chats/<uuid:pk>/", chat_views.chat_detail, name="chat-detail"),
    path("agents/", agent_views.agent_list, name="agent-list"),
    path("agents/<uuid:pk>/delete/", agent_views.agent_delete, name="agent-delete"),
    path("tokens/", account_views.token_list, name="token-list"),
    path("tokens/<int:pk>/revoke/", account_views.token_revoke, name="token-revoke"),
]
