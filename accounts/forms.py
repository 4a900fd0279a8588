"""Forms for the trader-facing pages. They parse input only; services make the decisions.

Amounts go through `accounts.validation.parse_quantity`, the same parser the bot API uses,
so a page and a bot get the same answer for the same input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm

from accounts.errors import (
    InsufficientFunds,
    InvalidAsset,
    InvalidQuantity,
    InvalidState,
    LimitExceeded,
    NotFound,
    ServiceError,
)
from accounts.models import Asset, User
from accounts.validation import parse_quantity

# Headlines for service errors, most specific class first (LimitExceeded shares
# InvalidQuantity's API code, so the class, not the code, picks the words).
_ERROR_TITLES: tuple[tuple[type[ServiceError], str], ...] = (
    (InsufficientFunds, "Insufficient funds"),
    (LimitExceeded, "Withdrawal limit reached"),
    (InvalidQuantity, "Invalid quantity"),
    (InvalidAsset, "Invalid asset"),
    (NotFound, "Not found"),
    (InvalidState, "Not possible"),
)


def service_error_text(exc: ServiceError) -> str:
    """What a person reads for a refused request, e.g. "Insufficient funds: …"."""
    for cls, title in _ERROR_TITLES:
        if isinstance(exc, cls):
            return f"{title}: {exc.message}"
    return exc.message


class ServiceErrorsMixin:
    """Lets a view attach a service's refusal to the form, shown above its fields."""

    def add_service_error(self, exc: ServiceError) -> None:
        self.add_error(None, service_error_text(exc))  # type: ignore[attr-defined]


class SignupForm(UserCreationForm):  # type: ignore[type-arg]
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].help_text = "Optional. Only used to reach you about your account."
        self.fields["username"].widget.attrs.update({"autocomplete": "username", "autofocus": True})


def _quantity_input() -> forms.TextInput:
    # A text input, not type=number: browsers round and localise number inputs, and the
    # server must see exactly the decimal the user typed.
    return forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "0.00"})


class _AssetAmountForm(ServiceErrorsMixin, forms.Form):
    """An active asset and a quantity valid for that asset's precision."""

    asset = forms.ChoiceField()
    quantity = forms.CharField(max_length=100, widget=_quantity_input())

    def __init__(self, *args: Any, assets: Iterable[Asset], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._assets = {asset.symbol: asset for asset in assets}
        field = self.fields["asset"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(symbol, symbol) for symbol in self._assets]
        # Most transfers are cash: preselect the first cash asset rather than the first stock.
        field.initial = next((a.symbol for a in self._assets.values() if a.kind == Asset.Kind.CASH), None)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        symbol, raw = cleaned.get("asset"), cleaned.get("quantity")
        if symbol is None or raw is None:
            return cleaned
        asset = self._assets[symbol]  # ChoiceField already refused anything else
        cleaned["asset"] = asset
        try:
            cleaned["quantity"] = parse_quantity(raw, asset=asset)
        except ServiceError as exc:
            self.add_service_error(exc)
        return cleaned


class DepositForm(_AssetAmountForm):
    pass


class WithdrawForm(_AssetAmountForm):
    address = forms.CharField(
        max_length=128,
        widget=forms.TextInput(
            attrs={"placeholder": "Bank account, e.g. DE89 3704 0044 0532 0130 00", "autocomplete": "off"}
        ),
    )


class ApiKeyForm(ServiceErrorsMixin, forms.Form):
    public_key = forms.CharField(
        max_length=100,
        widget=forms.TextInput(
            attrs={
                "placeholder": "e.g. 11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
                "autocomplete": "off",
                "spellcheck": "false",
            }
        ),
    )
    label = forms.CharField(
        max_length=64, required=False, widget=forms.TextInput(attrs={"placeholder": "e.g. market maker"})
    )
