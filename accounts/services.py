"""Every write to balances, deposits, withdrawals, allocations, API keys and assets.

Money rules (ARCHITECTURE.md "Money", STYLE.md 6):
- A balance row is only changed under its row lock, taken through `balances_lock` — the one
  helper that locks balances, always in primary-key order, in one query, so two
  transactions that need the same rows can never deadlock on each other.
- Every change of a balance writes a `LedgerEntry` in the same transaction, so each balance
  equals the sum of its ledger entries (`check_ledger` proves it).
- A state change of a deposit or withdrawal locks that row first, then the balance, and
  refuses the wrong state, so a double-clicked "confirm" credits once.
- Overdrafts are refused here with InsufficientFunds; the CheckConstraints on Balance are
  the backstop if a bug slips past.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import nacl.bindings
import nacl.exceptions
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.errors import (
    InsufficientFunds,
    InvalidAsset,
    InvalidState,
    LimitExceeded,
    NotFound,
    ServiceError,
)
from accounts.models import (
    ZERO,
    ApiKey,
    Asset,
    Balance,
    Deposit,
    LedgerEntry,
    StaffAllocation,
    User,
    Withdrawal,
)
from accounts.validation import parse_quantity
from exchange_site.db.prepared import prepared_cursor

Reason = LedgerEntry.Reason


# --- Balances and the ledger ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """One ledger line for `ledger_post`: a change of one user's balance of one asset."""

    user_id: int
    asset_id: int
    available_delta: Decimal
    locked_delta: Decimal
    reason: str
    reference: str
    actor_id: int | None = None


# No savepoint when nested (two round trips per order placed): it only reads, locks and
# inserts with ON CONFLICT DO NOTHING, so nothing in it needs undoing on its own; a
# database error here ends the caller's transaction anyway.
@transaction.atomic(savepoint=False)
def balances_lock(*, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Balance]:
    """Lock the balance rows of these (user_id, asset_id) pairs, creating missing ones.

    Call it ONCE per transaction with every key the transaction will touch: the rows are
    locked in one query in primary-key order, which is what makes concurrent callers
    deadlock-free. Returns the locked rows, read after the lock was granted (so current).
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    # Lock first, create only what is missing: nearly always every row exists, so this is
    # one query rather than an existence SELECT followed by the locking one.
    locked = _balances_select_for_update(wanted)
    if len(locked) < len(wanted):
        # ON CONFLICT DO NOTHING: a concurrent transaction may create the same row between
        # our SELECT and INSERT; we then wait for it and use its row. Rows go in key order
        # so two inserters wait on each other in the same order.
        Balance.objects.bulk_create(
            [Balance(user_id=user_id, asset_id=asset_id) for user_id, asset_id in wanted if (user_id, asset_id) not in locked],
            ignore_conflicts=True,
        )
        locked = _balances_select_for_update(wanted)
    assert len(locked) == len(wanted), "balance rows missing after insert"
    return locked


_BALANCE_FIELDS = ["id", "user_id", "asset_id", "available", "locked", "updated_at"]
# (user_id, asset_id) IN unnest(...), locked in id order: one parameter per column however
# many keys, written out and prepared rather than built by the ORM: this runs for every
# batch of orders and every settlement, and building the ORM query cost more CPU than the
# database's answer. No Balance field has a database converter, so `from_db` is exact.
_BALANCES_FOR_UPDATE = (
    f"SELECT {', '.join(_BALANCE_FIELDS)} FROM accounts_balance WHERE (user_id, asset_id) IN "
    "(SELECT * FROM unnest(%s::bigint[], %s::bigint[])) ORDER BY id FOR UPDATE"
)


def _balances_select_for_update(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], Balance]:
    with prepared_cursor() as cursor:
        cursor.execute(_BALANCES_FOR_UPDATE, [[k[0] for k in wanted], [k[1] for k in wanted]])
        rows = [Balance.from_db(connection.alias, _BALANCE_FIELDS, row) for row in cursor.fetchall()]
    return {(row.user_id, row.asset_id): row for row in rows}


def _amount(value: Decimal, asset: Asset) -> str:
    """An amount as people read it: at the asset's precision, not the column's 16 places."""
    return f"{value.quantize(Decimal(1).scaleb(-asset.precision)):f}"


def _check_not_negative(balance: Balance, available_delta: Decimal, locked_delta: Decimal) -> None:
    # `balance.asset` only for the message: reading it loads the asset row (a query per
    # order placed) unless the caller set it.
    if balance.available + available_delta < 0:
        asset = balance.asset
        raise InsufficientFunds(
            f"Insufficient {asset.symbol}: {_amount(balance.available, asset)} available, "
            f"{_amount(-available_delta, asset)} needed"
        )
    if balance.locked + locked_delta < 0:
        asset = balance.asset
        # Only a bug can get here (unlocking more than was locked); say so plainly.
        raise InsufficientFunds(
            f"Insufficient locked {asset.symbol}: {_amount(balance.locked, asset)} locked, "
            f"{_amount(-locked_delta, asset)} to release"
        )


def _balance_apply(
    balance: Balance,
    *,
    available_delta: Decimal,
    locked_delta: Decimal,
    reason: str,
    reference: str,
    actor_id: int | None,
) -> Balance:
    """Apply a change to a balance the caller has locked, and write its ledger entry.

    One statement (the UPDATE in a CTE), so the change and its entry commit or fail
    together and the CheckConstraints still hold; one round trip and no ORM query
    building, since order entry runs it for every order placed.
    """
    if reason not in _REASONS:
        raise ValueError(f"unknown ledger reason {reason!r}")
    _check_not_negative(balance, available_delta, locked_delta)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH changed AS (
                UPDATE accounts_balance SET available = available + %s, locked = locked + %s, updated_at = %s
                WHERE id = %s RETURNING id
            )
            INSERT INTO accounts_ledgerentry
                (user_id, asset_id, available_delta, locked_delta, reason, reference, actor_id, created_at)
            SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM changed
            """,
            [
                available_delta, locked_delta, now, balance.pk,
                balance.user_id, balance.asset_id, available_delta, locked_delta, reason, reference, actor_id, now,
            ],
        )
        written = cursor.rowcount
    if written != 1:
        raise RuntimeError(f"balance row {balance.pk} vanished while locked")
    # We hold the row lock, so the new values are exactly these; no need to re-read.
    balance.available += available_delta
    balance.locked += locked_delta
    balance.updated_at = now
    return balance


def balance_change(
    *,
    user_id: int,
    asset_id: int,
    available_delta: Decimal,
    locked_delta: Decimal,
    reason: str,
    reference: str,
    actor_id: int | None = None,
) -> Balance:
    """Change one balance under its row lock and write one ledger entry.

    Raises InsufficientFunds (and changes nothing) if available or locked would go below
    zero. Use `ledger_post` when a transaction changes several balances.
    """
    if not transaction.get_connection().in_atomic_block:
        with transaction.atomic():
            return balance_change(
                user_id=user_id, asset_id=asset_id, available_delta=available_delta, locked_delta=locked_delta,
                reason=reason, reference=reference, actor_id=actor_id,
            )
    # Inside the caller's transaction (deposits, withdrawals): no savepoint, which cost two
    # round trips per call. The refusal is raised before anything is written, so a caller that
    # catches it may go on with its transaction; the write below is a single statement,
    # so it cannot half-happen.
    balance = balances_lock(keys=[(user_id, asset_id)])[(user_id, asset_id)]
    return _balance_apply(
        balance, available_delta=available_delta, locked_delta=locked_delta, reason=reason,
        reference=reference, actor_id=actor_id,
    )


_REASONS = frozenset(Reason.values)  # `Reason.values` builds a new list on every access
_NO_CHANGE = (ZERO, ZERO)


def ledger_post(*, changes: Sequence[LedgerChange]) -> None:
    """Apply many ledger changes at once (the DB processor's settlement), set-based.

    Locks every touched balance once, checks each row's summed result is not negative,
    updates all rows in one statement and inserts all entries with one COPY. Raises
    InsufficientFunds naming the user and asset of the first row that would go negative;
    nothing is written then.
    """
    if not changes:
        return
    if not transaction.get_connection().in_atomic_block:
        with transaction.atomic():
            return ledger_post(changes=changes)
    # Inside the caller's transaction (settlement): no savepoint, as in
    # `balance_change`. The refusal below is raised before anything is written; a failed
    # UPDATE or COPY after it aborts the caller's transaction, which PostgreSQL then
    # refuses to commit, so nothing half-applied can last.
    sums: dict[tuple[int, int], tuple[Decimal, Decimal]] = {}
    for change in changes:
        if change.reason not in _REASONS:
            raise ValueError(f"unknown ledger reason {change.reason!r}")
        key = (change.user_id, change.asset_id)
        available, locked = sums.get(key, _NO_CHANGE)
        sums[key] = (available + change.available_delta, locked + change.locked_delta)
    balances = balances_lock(keys=sums.keys())
    for key in sorted(sums):
        balance = balances[key]
        available_delta, locked_delta = sums[key]
        if balance.available + available_delta < 0 or balance.locked + locked_delta < 0:
            raise InsufficientFunds(
                f"Ledger post would make balance of user {key[0]} asset {key[1]} negative: "
                f"available {balance.available}{available_delta:+}, locked {balance.locked}{locked_delta:+}"
            )
    moved = {key: deltas for key, deltas in sums.items() if deltas != (ZERO, ZERO)}
    if moved:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE accounts_balance AS b
                SET available = b.available + v.available_delta,
                    locked = b.locked + v.locked_delta,
                    updated_at = %s
                FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[])
                    AS v(id, available_delta, locked_delta)
                WHERE b.id = v.id
                """,
                [
                    timezone.now(),
                    [balances[key].pk for key in moved],
                    [deltas[0] for deltas in moved.values()],
                    [deltas[1] for deltas in moved.values()],
                ],
            )
    # COPY rather than bulk_create: the settlement posts thousands of entries per
    # transaction, and building a model instance per entry cost more than the database did.
    # Text rows built here (psycopg's per-value dumping was most of the cost); the one
    # free-text column is escaped for COPY.
    now = timezone.now().isoformat()
    lines = [
        f"{c.user_id}\t{c.asset_id}\t{c.available_delta}\t{c.locked_delta}\t{c.reason}\t"
        f"{_copy_escape(c.reference)}\t{_NULL if c.actor_id is None else c.actor_id}\t{now}\n"
        for c in changes
    ]
    with connection.connection.cursor() as raw, raw.copy(
        "COPY accounts_ledgerentry (user_id, asset_id, available_delta, locked_delta, reason, reference, actor_id,"
        " created_at) FROM STDIN"
    ) as copy:
        for start in range(0, len(lines), 20_000):
            copy.write("".join(lines[start : start + 20_000]))


_NULL = "\\N"  # COPY text's NULL
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_escape(text: str) -> str:
    return text.translate(_COPY_ESCAPES) if "\\" in text or not text.isprintable() else text


@transaction.atomic
def house_user() -> User:
    """The owner of the house (fee) account; created on first use, cannot log in."""
    user, created = User.objects.get_or_create(username=settings.BOURSE_HOUSE_USERNAME)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _require_staff(staff: User) -> None:
    if not (staff.is_active and staff.is_staff):
        raise ServiceError("Only staff can do this", code="FORBIDDEN", http_status=403)


def _require_active_asset(asset: Asset) -> None:
    if not asset.is_active:
        raise InvalidAsset(f"Asset {asset.symbol!r} is not active")


# --- Deposits ---------------------------------------------------------------------------


def _deposit_locked(deposit_id: int) -> Deposit:
    try:
        return Deposit.objects.select_for_update().select_related("asset").get(pk=deposit_id)
    except Deposit.DoesNotExist:
        raise NotFound(f"Deposit {deposit_id} not found") from None


def _deposit_credit(deposit: Deposit, *, actor: User) -> Deposit:
    # Precondition: the caller holds the deposit's row lock and it is Pending.
    balance_change(
        user_id=deposit.user_id,
        asset_id=deposit.asset_id,
        available_delta=deposit.quantity,
        locked_delta=ZERO,
        reason=Reason.DEPOSIT,
        reference=f"deposit:{deposit.pk}",
        actor_id=actor.pk,
    )
    deposit.status = Deposit.Status.CONFIRMED
    deposit.decided_at = timezone.now()
    deposit.decided_by = actor
    deposit.save(update_fields=["status", "decided_at", "decided_by"])
    return deposit


@transaction.atomic
def deposit_create(*, user: User, asset: Asset, quantity: Decimal) -> Deposit:
    """Record a simulated bank transfer in, Pending until staff confirm it.

    With settings.BOURSE_AUTO_CONFIRM_DEPOSITS (demo sites) it is credited at once, with
    the user as the actor.
    """
    _require_active_asset(asset)
    quantity = parse_quantity(quantity, asset=asset)
    deposit = Deposit.objects.create(user=user, asset=asset, quantity=quantity)
    if settings.BOURSE_AUTO_CONFIRM_DEPOSITS:
        _deposit_credit(deposit, actor=user)
    return deposit


@transaction.atomic
def deposit_confirm(*, deposit_id: int, staff: User) -> Deposit:
    """Pending → Confirmed: credit the user's available balance (ledger reference deposit:<id>)."""
    _require_staff(staff)
    deposit = _deposit_locked(deposit_id)
    if deposit.status != Deposit.Status.PENDING:
        raise InvalidState(f"Deposit {deposit_id} is {deposit.status}, not Pending")
    return _deposit_credit(deposit, actor=staff)


@transaction.atomic
def deposit_reject(*, deposit_id: int, staff: User) -> Deposit:
    """Pending → Rejected; nothing is credited."""
    _require_staff(staff)
    deposit = _deposit_locked(deposit_id)
    if deposit.status != Deposit.Status.PENDING:
        raise InvalidState(f"Deposit {deposit_id} is {deposit.status}, not Pending")
    deposit.status = Deposit.Status.REJECTED
    deposit.decided_at = timezone.now()
    deposit.decided_by = staff
    deposit.save(update_fields=["status", "decided_at", "decided_by"])
    return deposit


# --- Withdrawals ------------------------------------------------------------------------


def _validate_address(address: object) -> str:
    if not isinstance(address, str) or not address.strip():
        raise ServiceError("address is required")
    address = address.strip()
    if len(address) > 128:
        raise ServiceError("address must be at most 128 characters")
    if not address.isprintable():
        raise ServiceError("address must contain only printable characters")
    return address


def withdrawal_limit(asset: Asset) -> Decimal | None:
    """The rolling-24h limit per user for this asset, or None for no limit."""
    if asset.withdrawal_limit_24h is not None:
        return asset.withdrawal_limit_24h
    default = settings.BOURSE_DEFAULT_WITHDRAWAL_LIMIT_24H
    return None if default is None else Decimal(default)


@transaction.atomic
def withdrawal_create(*, user: User, asset: Asset, quantity: Decimal, address: str) -> Withdrawal:
    """Request a withdrawal: the quantity moves from available to locked until staff decide.

    Refuses with InsufficientFunds, or LimitExceeded when Pending plus Completed
    withdrawals created in the last 24 hours would pass the asset's limit.
    """
    _require_active_asset(asset)
    quantity = parse_quantity(quantity, asset=asset)
    address = _validate_address(address)
    # The limit is summed while we hold the balance row lock: every withdrawal of this
    # user and asset takes the same lock first, so two concurrent requests cannot both
    # read the old total and both pass.
    balance = balances_lock(keys=[(user.pk, asset.pk)])[(user.pk, asset.pk)]
    balance.asset = asset
    _check_not_negative(balance, -quantity, ZERO)
    limit = withdrawal_limit(asset)
    if limit is not None:
        since = timezone.now() - timedelta(hours=24)
        used = Withdrawal.objects.filter(
            user=user,
            asset=asset,
            status__in=[Withdrawal.Status.PENDING, Withdrawal.Status.COMPLETED],
            created_at__gte=since,
        ).aggregate(total=Sum("quantity"))["total"] or ZERO
        if used + quantity > limit:
            raise LimitExceeded(
                f"Withdrawal limit for {asset.symbol} is {limit} per 24 hours; "
                f"{max(limit - used, ZERO)} left"
            )
    withdrawal = Withdrawal.objects.create(user=user, asset=asset, quantity=quantity, address=address)
    _balance_apply(
        balance,
        available_delta=-quantity,
        locked_delta=quantity,
        reason=Reason.WITHDRAWAL_REQUEST,
        reference=f"withdrawal:{withdrawal.pk}",
        actor_id=user.pk,
    )
    return withdrawal


def _withdrawal_decide(
    withdrawal_id: int, *, actor: User, status: str, owner: User | None = None
) -> Withdrawal:
    query = Withdrawal.objects.select_for_update().select_related("asset")
    if owner is not None:
        query = query.filter(user=owner)
    try:
        withdrawal = query.get(pk=withdrawal_id)
    except Withdrawal.DoesNotExist:
        raise NotFound(f"Withdrawal {withdrawal_id} not found") from None
    if withdrawal.status != Withdrawal.Status.PENDING:
        raise InvalidState(f"Withdrawal {withdrawal_id} is {withdrawal.status}, not Pending")
    if status == Withdrawal.Status.COMPLETED:
        # The money leaves the exchange: it was locked on request, now it is gone.
        available_delta, reason = ZERO, Reason.WITHDRAWAL_COMPLETE
    else:
        available_delta, reason = withdrawal.quantity, Reason.WITHDRAWAL_RELEASE
    balance_change(
        user_id=withdrawal.user_id,
        asset_id=withdrawal.asset_id,
        available_delta=available_delta,
        locked_delta=-withdrawal.quantity,
        reason=reason,
        reference=f"withdrawal:{withdrawal.pk}",
        actor_id=actor.pk,
    )
    withdrawal.status = status
    withdrawal.decided_at = timezone.now()
    withdrawal.decided_by = actor
    withdrawal.save(update_fields=["status", "decided_at", "decided_by"])
    return withdrawal


@transaction.atomic
def withdrawal_complete(*, withdrawal_id: int, staff: User) -> Withdrawal:
    """Pending → Completed: the locked funds leave the exchange."""
    _require_staff(staff)
    return _withdrawal_decide(withdrawal_id, actor=staff, status=Withdrawal.Status.COMPLETED)


@transaction.atomic
def withdrawal_reject(*, withdrawal_id: int, staff: User) -> Withdrawal:
    """Pending → Rejected: the locked funds return to available."""
    _require_staff(staff)
    return _withdrawal_decide(withdrawal_id, actor=staff, status=Withdrawal.Status.REJECTED)


@transaction.atomic
def withdrawal_cancel(*, withdrawal_id: int, user: User) -> Withdrawal:
    """Pending → Cancelled by its owner: the locked funds return to available.

    Another user's withdrawal is NotFound, so ids cannot be probed.
    """
    return _withdrawal_decide(withdrawal_id, actor=user, status=Withdrawal.Status.CANCELLED, owner=user)


# --- Staff allocations ------------------------------------------------------------------


@transaction.atomic
def allocation_create(
    *, user: User, asset: Asset, quantity: Decimal, staff: User, note: str = ""
) -> StaffAllocation:
    """Staff give (positive) or take back (negative) an asset; a take-back cannot overdraw."""
    _require_staff(staff)
    quantity = parse_quantity(quantity, asset=asset, allow_negative=True)
    note = (note or "").strip()
    if len(note) > 200:
        raise ServiceError("note must be at most 200 characters")
    balance = balances_lock(keys=[(user.pk, asset.pk)])[(user.pk, asset.pk)]
    balance.asset = asset
    _check_not_negative(balance, quantity, ZERO)
    allocation = StaffAllocation.objects.create(
        user=user, asset=asset, quantity=quantity, staff=staff, note=note
    )
    _balance_apply(
        balance,
        available_delta=quantity,
        locked_delta=ZERO,
        reason=Reason.ALLOCATION,
        reference=f"allocation:{allocation.pk}",
        actor_id=staff.pk,
    )
    return allocation


# --- API credentials --------------------------------------------------------------------


@transaction.atomic
def api_token_create(*, user: User) -> str:
    """A new DRF token for the user, replacing any old one. The key is shown once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user).key


@transaction.atomic
def api_token_revoke(*, user: User) -> None:
    Token.objects.filter(user=user).delete()


@transaction.atomic
def api_key_register(*, user: User, public_key: str, label: str = "") -> ApiKey:
    """Register an Ed25519 public key (base64 of its 32 raw bytes) for signed requests."""
    if not isinstance(public_key, str) or not public_key.strip():
        raise ServiceError("public_key is required")
    try:
        raw = base64.b64decode(public_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError("public_key must be base64") from None
    if len(raw) != 32:
        raise ServiceError("public_key must be the 32 bytes of an Ed25519 public key")
    try:
        # VerifyKey() only checks the length; this conversion decodes the point and
        # refuses invalid and small-order ones, which no honest key generator produces.
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(raw)
    except nacl.exceptions.CryptoError:
        raise ServiceError("public_key is not a valid Ed25519 public key") from None
    label = (label or "").strip()
    if len(label) > 64:
        raise ServiceError("label must be at most 64 characters")
    # Store the canonical encoding, so the same key cannot be registered twice spelled differently.
    canonical = base64.b64encode(raw).decode()
    if ApiKey.objects.filter(public_key=canonical).exists():
        raise ServiceError("This public key is already registered")
    try:
        with transaction.atomic():
            return ApiKey.objects.create(user=user, public_key=canonical, label=label)
    except IntegrityError:
        raise ServiceError("This public key is already registered") from None


@transaction.atomic
def api_key_revoke(*, user: User, api_key_id: int) -> ApiKey:
    """Revoke one of the user's keys (idempotent). Another user's key is NotFound."""
    try:
        key = ApiKey.objects.select_for_update().get(pk=api_key_id, user=user)
    except ApiKey.DoesNotExist:
        raise NotFound(f"API key {api_key_id} not found") from None
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


# --- Assets -----------------------------------------------------------------------------

_SYMBOL = re.compile(r"^[A-Z0-9]{1,16}$")


@transaction.atomic
def asset_create(
    *,
    symbol: str,
    name: str,
    precision: int,
    kind: str,
    withdrawal_limit_24h: Decimal | None = None,
) -> Asset:
    """Create an asset. Symbols are 1-16 upper-case letters or digits; precision 0-16."""
    symbol = (symbol or "").strip()
    if not _SYMBOL.match(symbol):
        raise InvalidAsset("symbol must be 1-16 upper-case letters or digits")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("name is required (at most 100 characters)")
    if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 16:
        raise ServiceError("precision must be a whole number from 0 to 16")
    if kind not in Asset.Kind.values:
        raise ServiceError(f"kind must be one of {', '.join(Asset.Kind.values)}")
    asset = Asset(symbol=symbol, name=name, precision=precision, kind=kind)
    if withdrawal_limit_24h is not None:
        asset.withdrawal_limit_24h = parse_quantity(
            withdrawal_limit_24h, asset=asset, field="withdrawal_limit_24h"
        )
    if Asset.objects.filter(symbol=symbol).exists():
        raise InvalidAsset(f"Asset {symbol!r} already exists")
    try:
        with transaction.atomic():
            asset.save()
    except IntegrityError:
        raise InvalidAsset(f"Asset {symbol!r} already exists") from None
    return asset
