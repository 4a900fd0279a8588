"""Reads for pages, the bot API and admin. Nothing here writes."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Asset, Balance, Deposit, LedgerEntry, User, Withdrawal


def balances_for(user: User) -> list[Balance]:
    """The user's balance of every active asset, in symbol order.

    Assets the user never held appear as unsaved zero Balance objects, so callers can
    render every asset the same way (`.asset`, `.available`, `.locked`, `.total`).
    """
    held = {
        balance.asset_id: balance
        for balance in Balance.objects.filter(user=user, asset__is_active=True).select_related("asset")
    }
    result = []
    for asset in Asset.objects.filter(is_active=True).order_by("symbol"):
        balance = held.get(asset.pk)
        if balance is None:
            balance = Balance(user=user, asset=asset)
        else:
            balance.asset = asset
        result.append(balance)
    return result


def deposits_for(user: User) -> QuerySet[Deposit]:
    return Deposit.objects.filter(user=user).select_related("asset").order_by("-created_at", "-id")


def withdrawals_for(user: User) -> QuerySet[Withdrawal]:
    return Withdrawal.objects.filter(user=user).select_related("asset").order_by("-created_at", "-id")


def ledger_for(user: User) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(user=user).select_related("asset").order_by("-created_at", "-id")
