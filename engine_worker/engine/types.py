"""Vocabulary shared by commands and events.

Values are plain ``str`` constants spelled as Backpack spells them on the wire, so
commands decoded from JSON can be passed straight in and events serialised straight
out. The engine compares them with ``==`` (never ``is``): strings decoded from JSON
are not interned.

Units: every price is an integer number of ticks, every quantity an integer number
of lots, and every "quote" amount is in tick*lot units (the sum of price*quantity
over fills). Converting to decimals is the caller's job.
"""

from typing import Final, Literal

Side = Literal["Bid", "Ask"]
BID: Final = "Bid"
ASK: Final = "Ask"

OrderType = Literal["Limit", "Market"]
LIMIT: Final = "Limit"
MARKET: Final = "Market"

TimeInForce = Literal["GTC", "IOC", "FOK"]
GTC: Final = "GTC"
IOC: Final = "IOC"
FOK: Final = "FOK"

SelfTradePrevention = Literal["RejectTaker", "RejectMaker", "RejectBoth"]
REJECT_TAKER: Final = "RejectTaker"
REJECT_MAKER: Final = "RejectMaker"
REJECT_BOTH: Final = "RejectBoth"

MarketStatus = Literal["Open", "LimitOnly", "PostOnly", "CancelOnly", "Closed"]
OPEN: Final = "Open"
LIMIT_ONLY: Final = "LimitOnly"
POST_ONLY: Final = "PostOnly"
CANCEL_ONLY: Final = "CancelOnly"
CLOSED: Final = "Closed"
MARKET_STATUSES: Final = frozenset((OPEN, LIMIT_ONLY, POST_ONLY, CANCEL_ONLY, CLOSED))

OrderStatus = Literal["New", "PartiallyFilled", "Filled", "Cancelled", "Expired"]
NEW: Final = "New"
PARTIALLY_FILLED: Final = "PartiallyFilled"
FILLED: Final = "Filled"
CANCELLED: Final = "Cancelled"
EXPIRED: Final = "Expired"

# Reasons carried by OrderRejected / OrderCancelled / OrderExpired.
R_UNKNOWN_MARKET: Final = "unknown_market"
R_UNKNOWN_ORDER: Final = "unknown_order"
R_INVALID: Final = "invalid"
R_MARKET_CLOSED: Final = "market_closed"
R_CANCEL_ONLY: Final = "market_cancel_only"
R_POST_ONLY_MARKET: Final = "market_post_only"
R_LIMIT_ONLY: Final = "market_limit_only"
R_NO_CHANGE: Final = "no_change"
R_USER: Final = "user"
R_CANCEL_ALL: Final = "cancel_all"
R_AMEND: Final = "amend"
R_POST_ONLY: Final = "post_only"
R_IOC: Final = "ioc"
R_FOK: Final = "fok"
R_NO_LIQUIDITY: Final = "no_liquidity"
R_QUOTE_CAP: Final = "quote_cap"
R_SELF_TRADE: Final = "self_trade"
R_PRICE_BAND: Final = "price_band"

# What an OrderRejected refused.
REQ_PLACE: Final = "place"
REQ_CANCEL: Final = "cancel"
REQ_CANCEL_ALL: Final = "cancel_all"
REQ_AMEND: Final = "amend"
