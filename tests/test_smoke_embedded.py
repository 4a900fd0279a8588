"""Smoke test on the embedded defaults: `scripts/bourse.py run` with no DATABASE_URL or
REDIS_URL, and two users trading through the bot API against the run's own processes.

The run's engine and DB processor do the matching and settling, on the embedded
PostgreSQL (no TimescaleDB) and the embedded Redis; the test only sets the exchange up with
`manage.py shell` (as staff would, through var/embedded.env) and then speaks plain HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.test_run_command import (
    ROOT,
    _env,
    _free_port,
    _launched,
    _processes_of,
    _stop,
    _wait_for_signup_page,
    _wait_no_processes,
)

pytestmark = pytest.mark.slow

# Staff's side: a market and two funded users with API tokens, printed as JSON. The run's
# defaults include the demo markets and a market maker quoting every Open market; this
# market is LimitOnly, which it leaves alone, so the two users trade with each other only.
SETUP = """
import json
from decimal import Decimal
from accounts import services as a
from accounts.models import Asset, User
from trading.services import market_create
usd = Asset.objects.get(symbol="USD")
smoke = a.asset_create(symbol="SMOKE", name="Smoke Test Inc.", precision=0, kind="stock")
market_create(base=smoke, quote=usd, tick_size=Decimal("0.01"), lot_size=Decimal("1"), status="LimitOnly")
staff = User.objects.create_user(username="smoke-staff", password="x", is_staff=True)
tokens = {}
for name, asset, amount in (("buyer", usd, "1000"), ("seller", smoke, "10")):
    user = User.objects.create_user(username=f"smoke-{name}", password="x")
    a.allocation_create(user=user, asset=asset, quantity=Decimal(amount), staff=staff, note="smoke")
    tokens[name] = a.api_token_create(user=user)
print("TOKENS=" + json.dumps(tokens))
"""

AFTERWARDS = """
from django.db.models import Sum
from accounts.ledger import ledger_check
from trading.models import Fill
print("FEES=" + str(Fill.objects.filter(market__symbol="SMOKE_USD").aggregate(fees=Sum("fee"))["fees"]))
print("LEDGER=" + repr(ledger_check()))
"""


def _shell(var_dir: Path, code: str) -> dict[str, str]:
    """Run `manage.py shell -c` against the run's embedded servers; its KEY=value lines."""
    env = _env(var_dir) | {"DJANGO_SETTINGS_MODULE": "exchange_site.settings.local"}
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _call(base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_status(base: str, token: str, order_id: str, wanted: str, log: Path, timeout: float = 30) -> None:
    query = urllib.parse.urlencode({"orderId": order_id, "symbol": "SMOKE_USD"})
    deadline = time.monotonic() + timeout
    while (status := _call(base, token, "GET", f"/api/v1/order?{query}")["status"]) != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"order {order_id} is {status}, not {wanted}, after {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def test_two_users_trade_on_the_embedded_defaults(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    with _launched(var_dir, port, log) as proc:
        _wait_for_signup_page(proc, port, log)
        commands = " ".join(_processes_of(var_dir).values())
        assert "run_engine" in commands and "run_db_processor" in commands, commands
        tokens = json.loads(_shell(var_dir, SETUP)["TOKENS"])
        buyer, seller = tokens["buyer"], tokens["seller"]

        order = {"symbol": "SMOKE_USD", "orderType": "Limit", "price": "20.00", "quantity": "5"}
        ask = _call(base, seller, "POST", "/api/v1/order", {**order, "side": "Ask"})
        _wait_status(base, seller, ask["id"], "New", log)  # resting: the seller is the maker
        bid = _call(base, buyer, "POST", "/api/v1/order", {**order, "side": "Bid"})
        _wait_status(base, buyer, bid["id"], "Filled", log)
        _wait_status(base, seller, ask["id"], "Filled", log)

        # 100.00 changed hands; taker (buyer) paid 0.20 %, maker (seller) 0.10 %.
        capital = {name: _call(base, token, "GET", "/api/v1/capital") for name, token in tokens.items()}
        assert {k: capital["buyer"][k] for k in ("USD", "SMOKE")} == {
            "USD": {"available": "899.80", "locked": "0.00", "staked": "0"},
            "SMOKE": {"available": "5", "locked": "0", "staked": "0"},
        }
        assert {k: capital["seller"][k] for k in ("USD", "SMOKE")} == {
            "USD": {"available": "99.90", "locked": "0.00", "staked": "0"},
            "SMOKE": {"available": "5", "locked": "0", "staked": "0"},
        }
        checked = _shell(var_dir, AFTERWARDS)
        assert Decimal(checked["FEES"]) == Decimal("0.30")  # both fees, to the house account
        assert checked["LEDGER"] == "[]"

        assert _stop(proc) == 0, log.read_text()[-4000:]
    assert _wait_no_processes(var_dir) == {}, "processes of the run are still alive"
