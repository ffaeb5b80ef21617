"""Which Anthropic account a turn uses.

An enabled ChatProvider row with a key (set by an admin, encrypted at rest) wins over the
``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL`` environment variables, so a deployment can rotate keys
without a restart. The key only ever travels inside a :class:`~chats.llm.ProviderConfig`, whose ``repr``
hides it.
"""

from __future__ import annotations

from django.conf import settings

from chatdesk.exceptions import ProviderNotConfigured
from chats.llm import ProviderConfig
from chats.models import ChatProvider


def provider_resolve() -> ProviderConfig:
    """Return the Anthropic credentials to use. Raise ProviderNotConfigured when there are none."""
    row = ChatProvider.objects.filter(provider=ChatProvider.Provider.ANTHROPIC, enabled=True).first()
    if row is not None and row.has_api_key:
        key = row.get_api_key()
        if key.strip():
            return ProviderConfig(api_key=key, base_url=row.base_url or None)
    if settings.ANTHROPIC_API_KEY.strip():
        return ProviderConfig(
            api_key=settings.ANTHROPIC_API_KEY.strip(), base_url=settings.ANTHROPIC_BASE_URL or None
        )
    raise ProviderNotConfigured()


def provider_configured() -> bool:
    """Return True when a turn could reach Anthropic (decides whether sub-agent tools are offered)."""
    try:
        provider_resolve()
    except ProviderNotConfigured:
        return False
    return True
