"""`python manage.py run_market_maker`: quote the markets through the bot API over HTTP.

The command runs inside Django only to find the market maker's API token and the markets'
reference prices (the markets endpoint does not show them); the bot itself
(`trading.market_maker`) trades over HTTP at `BOURSE_API_URL`, like any outside bot.
`scripts/bourse.py run` starts it and treats its exit as the exchange failing, so a
missing user is waited for, not an error.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection
from rest_framework.authtoken.models import Token

from accounts.models import User
from accounts.services import api_token_create
from trading.market_maker import MAX_LEVELS, HttpApi, MarketMaker
from trading.models import Market

logger = logging.getLogger("bourse.market_maker")

DEFAULT_API_URL = "http://127.0.0.1:8000"
# How often to look again for a market-maker user that does not exist yet.
USER_POLL_SECONDS = 30.0


def _price_option(values: list[str]) -> dict[str, Decimal]:
    prices: dict[str, Decimal] = {}
    for value in values:
        symbol, sep, raw = value.partition("=")
        try:
            price = Decimal(raw)
        except InvalidOperation:
            price = Decimal(0)
        if not sep or not symbol or not price.is_finite() or price <= 0:
            raise CommandError(f"--price takes SYMBOL=PRICE, e.g. AAPL_USD=190.00 (got {value!r})")
        prices[symbol.strip()] = price
    return prices


def _reference_prices(overrides: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Where to start quoting a market: the band's reference (the last trade, else the
    staff-set reference price), overridden by `--price`."""
    close_old_connections()
    try:
        prices = {
            symbol: last or reference
            for symbol, last, reference in Market.objects.values_list("symbol", "state__last_price", "reference_price")
            if (last or reference)
        }
    finally:
        # The bot does not use the database between these reads: hold no idle connection.
        connection.close()
    return {**prices, **overrides}


def _token_for(username: str) -> str | None:
    close_old_connections()
    try:
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            return None
        # Keep an existing token: replacing it would break anyone else using it.
        key = Token.objects.filter(user=user).values_list("key", flat=True).first()
        return key or api_token_create(user=user)
    finally:
        connection.close()


class Command(BaseCommand):
    help = "Quote a ladder of bids and asks on the markets through the bot API (HTTP), as user --user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", default="marketmaker", help="The market maker's username (default marketmaker).")
        parser.add_argument(
            "--api-url",
            default=os.environ.get("BOURSE_API_URL", DEFAULT_API_URL),
            help=f"The exchange's base URL (default $BOURSE_API_URL, else {DEFAULT_API_URL}).",
        )
        parser.add_argument(
            "--symbols", default="", help="Comma-separated markets to quote (default: every Open market)."
        )
        parser.add_argument("--interval", type=float, default=2.0, help="Seconds between cycles (default 2).")
        parser.add_argument("--levels", type=int, default=5, help=f"Levels per side, 1 to {MAX_LEVELS} (default 5).")
        parser.add_argument("--spread-bps", type=int, default=20, help="Best bid to best ask, in bps (default 20).")
        parser.add_argument("--step-bps", type=int, default=10, help="Between levels, in bps (default 10).")
        parser.add_argument(
            "--size", type=Decimal, default=Decimal(1), help="Level 1 size in minimum quantities (default 1)."
        )
        parser.add_argument(
            "--volatility-bps", type=float, default=10.0, help="Random walk of the fair price per cycle (default 10)."
        )
        parser.add_argument(
            "--price",
            action="append",
            default=[],
            metavar="SYMBOL=PRICE",
            help="Start price for a market with no trade yet; overrides its reference price. Repeatable.",
        )
        parser.add_argument("--cycles", type=int, default=None, help="Stop after this many cycles (default: run).")
        parser.add_argument("--seed", type=int, default=None, help="Seed of the random walk (default: random).")

    def handle(self, *args: Any, **options: Any) -> None:
        prices = _price_option(options["price"])
        stopping = threading.Event()
        bots: list[MarketMaker] = []

        def stop(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: stopping after the current cycle", signum)
            stopping.set()
            for bot in bots:
                bot.stop()

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._run(options, prices, stopping, bots)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(
        self, options: dict[str, Any], prices: dict[str, Decimal], stopping: threading.Event, bots: list[MarketMaker]
    ) -> None:
        token = _token_for(options["user"])
        while token is None:
            logger.warning(
                "user %r does not exist or is inactive: not quoting (bootstrap_exchange creates it when "
                "BOURSE_DEMO is on); looking again in %.0f s",
                options["user"],
                USER_POLL_SECONDS,
            )
            if stopping.wait(USER_POLL_SECONDS):
                return
            token = _token_for(options["user"])

        try:
            bot = MarketMaker(
                HttpApi(options["api_url"], token),
                symbols=[s.strip() for s in options["symbols"].split(",") if s.strip()] or None,
                interval=options["interval"],
                levels=options["levels"],
                spread_bps=options["spread_bps"],
                step_bps=options["step_bps"],
                size=options["size"],
                volatility_bps=options["volatility_bps"],
                reference_prices=lambda: _reference_prices(prices),
                seed=options["seed"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        bots.append(bot)
        if stopping.is_set():  # a signal before the bot existed
            return
        logger.info("quoting as %r through %s every %.1f s", options["user"], options["api_url"], options["interval"])
        try:
            bot.run(max_cycles=options["cycles"])
        finally:
            bot.shutdown()
        logger.info("market maker stopped")
