"""Errors raised by services. Plain Python so services stay free of DRF; the API maps them."""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request: `code` is one of BOT_API.md's error codes, `message` is for people."""

    code = "INVALID_CLIENT_REQUEST"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status


class InvalidAsset(ServiceError):
    code = "INVALID_ASSET"


class InvalidQuantity(ServiceError):
    code = "INVALID_QUANTITY"


class InsufficientFunds(ServiceError):
    code = "INSUFFICIENT_FUNDS"


class InvalidState(ServiceError):
    """The object is not in a state that allows the action (e.g. confirming a rejected deposit)."""

    code = "INVALID_CLIENT_REQUEST"


class LimitExceeded(ServiceError):
    code = "INVALID_QUANTITY"


class NotFound(ServiceError):
    code = "RESOURCE_NOT_FOUND"
    http_status = 404
