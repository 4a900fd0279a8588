"""`manage.py bootstrap_exchange`: first-run setup, safe to run on every start.

`scripts/bourse.py run` runs it after migrate. It creates what a fresh exchange needs and
changes nothing that already exists: the house (fee) account's user, the default assets,
and, when BOURSE_ADMIN_PASSWORD is set, a superuser `admin`; with BOURSE_DEMO on, the demo
markets and their market maker (trading's `bootstrap_markets`).
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Asset
from accounts.services import asset_create, house_user

# (symbol, name, precision, kind): USD counted in cents, shares in whole units.
DEFAULT_ASSETS: list[tuple[str, str, int, str]] = [
    ("USD", "US Dollar", 2, Asset.Kind.CASH),
    ("AAPL", "Apple Inc.", 0, Asset.Kind.STOCK),
    ("MSFT", "Microsoft Corporation", 0, Asset.Kind.STOCK),
    ("TSLA", "Tesla, Inc.", 0, Asset.Kind.STOCK),
]
ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the house user, the default assets and (with BOURSE_ADMIN_PASSWORD) the admin, if absent."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        house = house_user()
        created: list[str] = []
        existing = set(Asset.objects.values_list("symbol", flat=True))
        for symbol, name, precision, kind in DEFAULT_ASSETS:
            # An asset staff already created (or deactivated) is left exactly as it is.
            if symbol not in existing:
                asset_create(symbol=symbol, name=name, precision=precision, kind=kind)
                created.append(symbol)

        password = os.environ.get("BOURSE_ADMIN_PASSWORD", "")
        user_model = get_user_model()
        if password and not user_model.objects.filter(username=ADMIN_USERNAME).exists():
            # Never reset an existing admin's password: staff may have changed it since.
            user_model.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)
            created.append(f"superuser {ADMIN_USERNAME}")

        summary = ", ".join(created) if created else "nothing new"
        self.stdout.write(f"bootstrap_exchange: house user {house.username!r}; created {summary}")
        # Demo markets and a funded market maker, only with BOURSE_DEMO on (trading's command).
        call_command("bootstrap_markets", stdout=self.stdout)
