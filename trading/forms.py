"""The order entry form of the market page. It parses input only; `order_place` decides.

Prices and quantities are read as the bot API reads them (`trading.api.parsing`), so a page
and a bot get the same answer for the same order: the form checks shape (a finite positive
decimal), the service checks the market (tick, lot, minimums, status, funds).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from accounts.errors import InvalidQuantity
from accounts.forms import ServiceErrorsMixin
from accounts.models import AMOUNT, Asset
from accounts.validation import parse_quantity
from trading.models import Market, Order
from trading.services import OrderParams


def _decimal_input(placeholder: str) -> forms.TextInput:
    # Text, not type=number: browsers round and localise number inputs, and the server
    # must see exactly the decimal the user typed.
    return forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": placeholder})


class OrderForm(ServiceErrorsMixin, forms.Form):
    side = forms.ChoiceField(choices=Order.Side.choices, initial=Order.Side.BID, widget=forms.RadioSelect)
    order_type = forms.ChoiceField(choices=Order.Type.choices, initial=Order.Type.LIMIT, widget=forms.RadioSelect)
    price = forms.CharField(max_length=100, required=False, widget=_decimal_input("Price"))
    quantity = forms.CharField(max_length=100, widget=_decimal_input("Amount"))
    post_only = forms.BooleanField(required=False, label="Post only")
    ioc = forms.BooleanField(required=False, label="IOC")

    def __init__(self, *args: Any, market: Market, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.market = market
        self.fields["price"].widget.attrs["step"] = f"{market.tick_size.normalize():f}"
        self.fields["quantity"].widget.attrs["step"] = f"{market.lot_size.normalize():f}"

    def _parse(self, raw: str, *, field: str) -> Decimal | None:
        # At the column's full precision: ticks and lots may be finer than the assets'
        # smallest units; `order_place` checks whole ticks and lots with the market's words.
        column = Asset(symbol=self.market.quote.symbol, precision=AMOUNT["decimal_places"])
        try:
            return parse_quantity(raw, asset=column, field=field)
        except InvalidQuantity as exc:
            self.add_error(field, exc.message)
            return None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("quantity"):
            cleaned["quantity"] = self._parse(cleaned["quantity"], field="quantity")
        price = (cleaned.get("price") or "").strip()
        if cleaned.get("order_type") == Order.Type.MARKET:
            # The price box may still hold a number from the Limit tab: a market order has none.
            cleaned["price"] = None
        elif not price:
            self.add_error("price", "Enter a price for a limit order.")
        else:
            cleaned["price"] = self._parse(price, field="price")
        return cleaned

    def order_params(self) -> OrderParams:
        """The validated form as the service's input. Only after `is_valid()`."""
        data = self.cleaned_data
        return OrderParams(
            side=data["side"],
            order_type=data["order_type"],
            price=data["price"],
            quantity=data["quantity"],
            time_in_force=Order.TimeInForce.IOC if data["ioc"] else Order.TimeInForce.GTC,
            post_only=data["post_only"],
        )

