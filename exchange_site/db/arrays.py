"""PostgreSQL array literals (`'{1,NULL,"Bid"}'`) for set-based statements over many rows.

A statement that takes one array per column (`unnest(%s::numeric[], …)`) is given each as
one text literal built here: psycopg adapting the elements one by one (as a list, bound
client-side or server-side) cost more CPU than the statement did in PostgreSQL. The
statement casts each literal to its array type, which parses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def array_literal(values: Iterable[Any]) -> str:
    """Numbers (int, Decimal), booleans or None, as an array literal."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def array_literal_quoted(values: Iterable[Any]) -> str:
    """Strings, or values written as their `str()` (datetimes), or None, as an array literal."""
    return "{" + ",".join("NULL" if v is None else '"' + _escape(str(v)) + '"' for v in values) + "}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"') if ("\\" in text or '"' in text) else text
