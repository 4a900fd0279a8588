"""`manage.py check_ledger`: prove the ledger invariants (accounts/ledger.py); exit 1 if broken."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.ledger import fmt_amount, ledger_problems


class Command(BaseCommand):
    help = "Check that balances match deposits, withdrawals, allocations and the ledger entries."

    def handle(self, *args: Any, **options: Any) -> None:
        totals, problems = ledger_problems()
        broken = {problem.symbol for problem in problems}
        for total in totals:
            if total.symbol not in broken:
                self.stdout.write(f"OK {total.symbol} total {fmt_amount(total.balances)}")
        for problem in problems:
            self.stderr.write(f"MISMATCH {problem.message}")
        if problems:
            # CommandError makes manage.py exit with status 1.
            raise CommandError(f"ledger check failed: {len(problems)} mismatch(es)")
        self.stdout.write(self.style.SUCCESS(f"Ledger OK ({len(totals)} assets)"))
