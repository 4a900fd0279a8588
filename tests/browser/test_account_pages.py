"""A trader in a real browser: sign up, fund the account through the HTMX form, see it land."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accounts import services
from accounts.models import Deposit, User, Withdrawal
from accounts.tests.factories import make_asset, make_staff, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_then_deposit_through_the_htmx_form(live_server: Any, page: Any, screenshot_dir: Path) -> None:
    from playwright.sync_api import expect

    make_asset("USD", precision=2, kind="cash")
    make_asset("AAPL", precision=0, kind="stock")
    foreign: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(live_server.url) else foreign.append(r.url))

    page.goto(f"{live_server.url}/")
    page.screenshot(path=str(screenshot_dir / "home.png"), full_page=True)
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password", exact=True).fill("trade-all-day-42")
    page.get_by_label("Password confirmation").fill("trade-all-day-42")
    page.screenshot(path=str(screenshot_dir / "signup.png"), full_page=True)
    page.get_by_role("button", name="Sign up").click()

    page.wait_for_url(f"{live_server.url}/account/")
    expect(page.get_by_text("Welcome to Bourse, carol")).to_be_visible()
    expect(page.locator('#balances tr[data-asset="USD"]')).to_contain_text("0.00")
    # A marker on `window` survives only if the page is never reloaded.
    page.evaluate("window.__noReload = true")

    deposit_form = page.locator("#deposit-form")
    expect(deposit_form.get_by_label("Asset")).to_have_value("USD")  # cash preselected
    deposit_form.get_by_label("Quantity").fill("2500.00")
    deposit_form.get_by_role("button", name="Request deposit").click()

    history = page.locator("#deposit-history tbody tr").first
    expect(history).to_contain_text("2,500.00")
    expect(history).to_contain_text("Pending")
    expect(page.get_by_text("Deposit of 2,500.00 USD requested")).to_be_visible()
    assert page.evaluate("window.__noReload") is True, "the deposit reloaded the whole page"

    # A withdrawal with nothing available is refused inline, still without a reload.
    withdraw_form = page.locator("#withdraw-form")
    withdraw_form.get_by_label("Asset").select_option("USD")
    withdraw_form.get_by_label("Quantity").fill("10")
    withdraw_form.get_by_label("Destination").fill("DE89 3704 0044")
    withdraw_form.get_by_role("button", name="Request withdrawal").click()
    expect(page.locator("#withdraw-form .alert--error")).to_contain_text("Insufficient funds")
    assert page.evaluate("window.__noReload") is True

    carol = User.objects.get(username="carol")
    assert list(Deposit.objects.filter(user=carol).values_list("quantity", "status")) == [
        (Decimal("2500"), Deposit.Status.PENDING)
    ]
    assert not Withdrawal.objects.exists()

    # Staff confirm the deposit; the trader withdraws part of it, then cancels.
    services.deposit_confirm(deposit_id=Deposit.objects.get(user=carol).pk, staff=make_staff("ops"))
    page.reload()
    expect(page.locator('#balances tr[data-asset="USD"]')).to_contain_text("2,500.00")
    page.evaluate("window.__noReload = true")
    withdraw_form.get_by_label("Quantity").fill("400")
    withdraw_form.get_by_label("Destination").fill("DE89 3704 0044")
    withdraw_form.get_by_role("button", name="Request withdrawal").click()
    pending = page.locator("#withdrawal-history tbody tr").first
    expect(pending).to_contain_text("Pending")
    expect(page.locator('#balances tr[data-asset="USD"] td.num')).to_have_text(["2,100.00", "400.00", "2,500.00"])
    page.screenshot(path=str(screenshot_dir / "account.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm asks first
    pending.get_by_role("button", name="Cancel").click()
    expect(pending).to_contain_text("Cancelled")
    expect(page.locator('#balances tr[data-asset="USD"] td.num')).to_have_text(["2,500.00", "0.00", "2,500.00"])
    assert page.evaluate("window.__noReload") is True
    assert Withdrawal.objects.get(user=carol).status == Withdrawal.Status.CANCELLED

    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(screenshot_dir / "account_mobile.png"), full_page=True)
    assert foreign == [], f"the page fetched from other hosts: {foreign}"


def test_api_token_is_shown_once_in_the_browser(live_server: Any, page: Any, screenshot_dir: Path) -> None:
    from playwright.sync_api import expect

    make_user("dave", password="trade-all-day-42")
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("dave")
    page.get_by_label("Password").fill("trade-all-day-42")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/account/")

    page.get_by_role("link", name="API keys").click()
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token")
    expect(token).to_have_text(re.compile(r"^[0-9a-f]{40}$"))
    key = token.inner_text()
    page.screenshot(path=str(screenshot_dir / "api_keys.png"), full_page=True)

    page.reload()
    expect(page.get_by_text("A token is active")).to_be_visible()
    assert key not in page.content()
