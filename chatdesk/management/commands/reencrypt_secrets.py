"""``manage.py reencrypt_secrets``: re-encrypt every stored secret under the first encryption key.

The second step of a key rotation (``chatdesk/crypto.py``): with the new key first and the old ones still
configured, this rewrites provider API keys and agent credentials so the old keys can then be dropped.
Rows that no configured key decrypts are listed and left as they are (exit status 1).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chatdesk.crypto import DecryptionError, reencrypt_secret

# (model, field holding a Fernet token; "" means no secret stored)
ENCRYPTED_FIELDS = (
    ("chats.ChatProvider", "api_key_encrypted"),
    ("agents.WorkspaceAgent", "server_credential_encrypted"),
)


class Command(BaseCommand):
    help = "Re-encrypt every stored secret under the first key of CHATDESK_ENCRYPTION_KEY (or SECRET_KEY)."

    def handle(self, *args: Any, **options: Any) -> None:
        done = 0
        failed: list[str] = []
        with transaction.atomic():
            for label, field in ENCRYPTED_FIELDS:
                model = apps.get_model(label)
                for row in model.objects.exclude(**{field: ""}).select_for_update().only("pk", field):
                    try:
                        token = reencrypt_secret(getattr(row, field))
                    except DecryptionError:
                        failed.append(f"{label} {row.pk}")
                        continue
                    model.objects.filter(pk=row.pk).update(**{field: token})
                    done += 1
        self.stdout.write(f"Re-encrypted {done} secret(s) under the current key.")
        if failed:
            raise CommandError(
                f"{len(failed)} secret(s) could not be decrypted with any configured key and were left as "
                f"they are: {', '.join(failed)}. Add the key they were encrypted with, then run this again "
                "(or enter those secrets again)."
            )
