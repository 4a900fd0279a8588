"""Conversions between the database's decimals and the engine's integer ticks and lots.

A market's *unit* is tick × lot: the quote value of one tick of price on one lot of
quantity. Notional = price_ticks × quantity_lots × unit, so the engine can count quote
amounts exactly in integers of `unit`. Market creation checks that unit is a whole number
of the quote asset's smallest unit (ARCHITECTURE.md "Money").
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from accounts.errors import ServiceError


def steps(value: Decimal, step: Decimal, *, field: str, code: str) -> int:
    """`value` as a whole number of `step`s; refuses a value that is not a multiple."""
    count, remainder = divmod(value, step)
    if remainder != 0:
        raise ServiceError(f"{field} {value.normalize():f} is not a multiple of {step.normalize():f}", code=code)
    return int(count)


def quantize_down(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR)


def quantize_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_CEILING)


def bid_lock(notional: Decimal, taker_fee_rate: Decimal, quote_places: int) -> Decimal:
    """What a bid locks: its notional plus the taker fee on all of it, rounded up."""
    return quantize_up(notional * (1 + taker_fee_rate), quote_places)


def fee(notional: Decimal, rate: Decimal, quote_places: int) -> Decimal:
    """A fill's fee, rounded down so an order's fees never exceed what it locked."""
    return quantize_down(notional * rate, quote_places)


def engine_quote_cap(amount: Decimal, taker_fee_rate: Decimal, unit: Decimal) -> int:
    """The engine's spending cap, in units, for `amount` of quote that includes the taker fee."""
    return int((amount / (1 + taker_fee_rate) / unit).to_integral_value(rounding=ROUND_FLOOR))
