"""Trader-facing pages: sign-up, the account (balances, deposits, withdrawals, ledger), API keys.

Every form works as a plain POST (redirect after success) and, with HTMX, as a request
that swaps the `#funds` fragment in place. Refusals from services are shown inline with
status 422, which the page's htmx config swaps like a success.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

from accounts import selectors, services
from accounts.errors import ServiceError
from accounts.forms import ApiKeyForm, DepositForm, SignupForm, WithdrawForm, service_error_text
from accounts.models import ApiKey, Asset, Deposit, User
from trading.views import markets_overview

HISTORY_ROWS = 20
LEDGER_ROWS = 25
# The new token's key waits here between the POST that made it and the one GET that shows it.
_NEW_TOKEN_SESSION_KEY = "accounts:new_api_token"


class AuthedRequest(HttpRequest):
    """What `login_required` views receive: the user is a real `User`."""

    user: User


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _key_name(key: ApiKey) -> str:
    return key.label or f"{key.public_key[:10]}…"


def _amount(value: Decimal, asset: Asset) -> str:
    # A column value has up to 32 digits, more than the default context's 28.
    with localcontext(prec=64):
        return f"{value.quantize(Decimal(1).scaleb(-asset.precision)):,}"


# --- Landing and sign-up ------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"rows": markets_overview()})


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("accounts:account")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(
            request, f"Welcome to Bourse, {user.get_username()}. Fund your account with a deposit to start trading."
        )
        return redirect("accounts:account")
    return render(request, "registration/signup.html", {"form": form})


# --- Account ------------------------------------------------------------------------------


def _active_assets() -> list[Asset]:
    return list(Asset.objects.filter(is_active=True).order_by("symbol"))


def _funds_context(
    user: User,
    *,
    deposit_form: DepositForm | None = None,
    withdraw_form: WithdrawForm | None = None,
    notice: str = "",
    error: str = "",
) -> dict[str, Any]:
    balances = selectors.balances_for(user)
    assets = [balance.asset for balance in balances]
    return {
        "balances": balances,
        "deposit_form": deposit_form or DepositForm(assets=assets),
        "withdraw_form": withdraw_form or WithdrawForm(assets=assets),
        "deposits": selectors.deposits_for(user)[:HISTORY_ROWS],
        "withdrawals": selectors.withdrawals_for(user)[:HISTORY_ROWS],
        "ledger": selectors.ledger_for(user)[:LEDGER_ROWS],
        "notice": notice,
        "error": error,
    }


def _render_funds(request: AuthedRequest, *, status: int = 200, **context: Any) -> HttpResponse:
    """The `#funds` fragment for HTMX, the whole account page otherwise."""
    template = "accounts/_funds.html" if _is_htmx(request) else "accounts/account.html"
    response = render(request, template, _funds_context(request.user, **context), status=status)
    # The same URL answers with a fragment or a page: caches must keep them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


def _funds_done(request: AuthedRequest, notice: str) -> HttpResponse:
    if _is_htmx(request):
        return _render_funds(request, notice=notice)
    messages.success(request, notice)
    return redirect("accounts:account")


@login_required
@require_GET
def account(request: AuthedRequest) -> HttpResponse:
    return _render_funds(request)


@login_required
@require_POST
def deposit(request: AuthedRequest) -> HttpResponse:
    form = DepositForm(request.POST, assets=_active_assets())
    if form.is_valid():
        asset = form.cleaned_data["asset"]
        try:
            created = services.deposit_create(user=request.user, asset=asset, quantity=form.cleaned_data["quantity"])
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            amount = f"{_amount(created.quantity, asset)} {asset.symbol}"
            if created.status == Deposit.Status.CONFIRMED:
                return _funds_done(request, f"Deposit of {amount} confirmed and credited.")
            return _funds_done(request, f"Deposit of {amount} requested. It is credited once staff confirm it.")
    return _render_funds(request, deposit_form=form, status=422)


@login_required
@require_POST
def withdraw(request: AuthedRequest) -> HttpResponse:
    form = WithdrawForm(request.POST, assets=_active_assets())
    if form.is_valid():
        asset = form.cleaned_data["asset"]
        try:
            created = services.withdrawal_create(
                user=request.user,
                asset=asset,
                quantity=form.cleaned_data["quantity"],
                address=form.cleaned_data["address"],
            )
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            amount = f"{_amount(created.quantity, asset)} {asset.symbol}"
            return _funds_done(
                request, f"Withdrawal of {amount} requested. The funds are locked until staff complete it."
            )
    return _render_funds(request, withdraw_form=form, status=422)


@login_required
@require_POST
def withdrawal_cancel(request: AuthedRequest, withdrawal_id: int) -> HttpResponse:
    try:
        cancelled = services.withdrawal_cancel(withdrawal_id=withdrawal_id, user=request.user)
    except ServiceError as exc:
        if _is_htmx(request):
            return _render_funds(request, error=service_error_text(exc), status=422)
        messages.error(request, service_error_text(exc))
        return redirect("accounts:account")
    amount = f"{_amount(cancelled.quantity, cancelled.asset)} {cancelled.asset.symbol}"
    return _funds_done(request, f"Withdrawal cancelled: {amount} is available again.")


# --- API keys -----------------------------------------------------------------------------


def _render_api_keys(request: AuthedRequest, *, key_form: ApiKeyForm | None = None, status: int = 200) -> HttpResponse:
    context = {
        "token": Token.objects.filter(user=request.user).first(),
        # Popped: the key of a new token is shown on exactly one page view.
        "new_token": request.session.pop(_NEW_TOKEN_SESSION_KEY, None),
        "api_keys": ApiKey.objects.filter(user=request.user, revoked_at__isnull=True).order_by("-created_at"),
        "key_form": key_form or ApiKeyForm(),
        "api_base": request.build_absolute_uri("/"),
    }
    return render(request, "accounts/api_keys.html", context, status=status)


@never_cache  # the page may carry a secret once; no cache may keep it
@login_required
@require_GET
def api_keys(request: AuthedRequest) -> HttpResponse:
    return _render_api_keys(request)


@login_required
@require_POST
def api_token_create(request: AuthedRequest) -> HttpResponse:
    # Redirect-after-POST with the key parked in the session: a reload of the page that
    # shows it neither re-creates the token nor shows the key a second time.
    request.session[_NEW_TOKEN_SESSION_KEY] = services.api_token_create(user=request.user)
    return redirect("accounts:api_keys")


@login_required
@require_POST
def api_token_revoke(request: AuthedRequest) -> HttpResponse:
    services.api_token_revoke(user=request.user)
    messages.success(request, "Token revoked. Requests sent with it are now refused.")
    return redirect("accounts:api_keys")


@never_cache
@login_required
@require_POST
def api_key_register(request: AuthedRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            key = services.api_key_register(
                user=request.user, public_key=form.cleaned_data["public_key"], label=form.cleaned_data["label"]
            )
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Key {_key_name(key)} registered. Sign requests with its seed.")
            return redirect("accounts:api_keys")
    return _render_api_keys(request, key_form=form, status=422)


@login_required
@require_POST
def api_key_revoke(request: AuthedRequest, api_key_id: int) -> HttpResponse:
    try:
        key = services.api_key_revoke(user=request.user, api_key_id=api_key_id)
    except ServiceError as exc:
        messages.error(request, service_error_text(exc))
    else:
        messages.success(request, f"Key {_key_name(key)} revoked.")
    return redirect("accounts:api_keys")
