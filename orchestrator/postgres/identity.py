"""Whether two connections reach the same database, decided by what the servers say.

A URL's text proves nothing: ``localhost`` and ``127.0.0.1``, a Unix socket, a second listen
address, an IPv6 address, a DNS alias or a pooler reach one database under other names, and a
staging URL that does is production. The probe needs no privilege: one session takes an
advisory lock on random keys; the other looks for that very lock, held in its own database, in
``pg_locks``, which every role may read. Seen: the same database. Not seen: another database
or another server. A probe that cannot run (a server out of reach) decides nothing: callers
refuse rather than guess.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg

# The probe's lock is the two-key form (objsubid 2) under this first key ("WIND"), so that it
# cannot be mistaken for an application's single-key advisory lock.
PROBE_KEY = 0x57494E44


def same_database(holder: psycopg.Connection[Any], looker: psycopg.Connection[Any]) -> bool:
    """Whether ``looker`` sees the advisory lock ``holder`` takes, in ``looker``'s own
    database: then both sessions are in one database of one running server. The lock is
    taken on ``holder`` and released before returning; ``looker`` only reads."""
    key = secrets.randbits(31)
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (PROBE_KEY, key))
    try:
        row = looker.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            (PROBE_KEY, key)).fetchone()
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", (PROBE_KEY, key))
    return bool(row and row[0])
