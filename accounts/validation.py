"""Parsing of user-supplied amounts and asset symbols, shared by pages, the bot API and admin.

Every amount that reaches a service has been through `parse_quantity`, so services may
assume a finite, positive (or explicitly allowed negative) Decimal that fits the database
column and the asset's precision.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

from accounts.errors import InvalidAsset, InvalidQuantity
from accounts.models import AMOUNT, Asset

# DecimalField(32, 16): 16 digits before the point, 16 after.
_MAX_INTEGER_DIGITS = AMOUNT["max_digits"] - AMOUNT["decimal_places"]
_MAX_ABS = Decimal(10) ** _MAX_INTEGER_DIGITS
# Longest string we bother parsing; anything longer cannot fit the column anyway and
# refusing early keeps a hostile "1" * 10**6 from costing CPU.
_MAX_TEXT = 100


def parse_quantity(
    value: object, *, asset: Asset, field: str = "quantity", allow_negative: bool = False
) -> Decimal:
    """Turn a decimal string (or int/Decimal) into a Decimal valid for `asset`.

    Floats are refused: they cannot carry an exact decimal amount, and accepting them would
    hide rounding a client did not intend. Bools are refused because `True` is an int.
    Raises InvalidQuantity naming `field`.
    """
    if value is None or isinstance(value, (bool, float)):
        raise InvalidQuantity(f"{field} must be a decimal string, e.g. \"1.5\"")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidQuantity(f"{field} is required")
        if len(text) > _MAX_TEXT:
            raise InvalidQuantity(f"{field} is too long")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InvalidQuantity(f"{field} is not a number: {text!r}") from None
    else:
        raise InvalidQuantity(f"{field} must be a decimal string, e.g. \"1.5\"")

    if not number.is_finite():
        raise InvalidQuantity(f"{field} must be a finite number")
    # copy_abs() and comparisons are exact; abs() would round to the context's 28 digits.
    if number.copy_abs() >= _MAX_ABS:
        raise InvalidQuantity(f"{field} is too large")
    if number.is_zero():
        raise InvalidQuantity(f"{field} must not be zero")
    if number < 0 and not allow_negative:
        raise InvalidQuantity(f"{field} must be positive")
    # A column value has up to 32 significant digits, more than the default context's 28:
    # work in a wider context so normalize() and quantize() never round.
    with localcontext(prec=2 * AMOUNT["max_digits"]):
        # normalize() drops trailing zeros, so "1.50" counts as 1 decimal place.
        exponent = number.normalize().as_tuple().exponent
        assert isinstance(exponent, int)  # finite, checked above
        if -exponent > asset.precision:
            raise InvalidQuantity(
                f"{field} has more than {asset.precision} decimal places for {asset.symbol}"
            )
        # Quantize to the asset's precision so "1.50" and "1.5" store identically.
        return number.quantize(Decimal(1).scaleb(-asset.precision))


def get_asset(symbol: object) -> Asset:
    """The active asset with this symbol (exact upper case after stripping spaces)."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise InvalidAsset("An asset symbol is required")
    text = symbol.strip()
    if len(text) > 16:
        raise InvalidAsset(f"Unknown asset {text[:16]!r}…")
    try:
        return Asset.objects.get(symbol=text, is_active=True)
    except Asset.DoesNotExist:
        raise InvalidAsset(f"Unknown asset {text!r}") from None
