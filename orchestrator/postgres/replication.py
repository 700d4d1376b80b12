"""Logical replication on production, as a swap sees it.

A swap moves production's name to another database; what replication ties to the database
object itself stays behind. A logical slot belongs to the database it was created in: after a
swap it sits on the retained database, its consumer (Debezium, pg_recvlogical) fails, and the
slot pins WAL until someone drops it. A subscription's apply worker holds production open
(only the subscription's owner may stop it), so the rollback disables it first; the retained
database keeps it, disabled. Both are said before (``window plan``) and after (the rollback's
output, status and report).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg
from psycopg import sql


class Slot(NamedTuple):
    name: str
    plugin: str
    active: bool

    def left_on(self, retained: str) -> str:
        return (f"logical slot {self.name} ({self.plugin}) on {retained}: its consumer"
                " fails until pointed at a new slot on production, and it keeps WAL on the"
                f" server until dropped (SELECT pg_drop_replication_slot('{self.name}'))")


def slots(conn: psycopg.Connection[Any], dbname: str) -> list[Slot]:
    """The logical replication slots created in ``dbname`` (any role may list them)."""
    return [Slot(*row) for row in conn.execute(
        "SELECT slot_name::text, plugin::text, active FROM pg_replication_slots"
        " WHERE slot_type = 'logical' AND database = %s ORDER BY 1", (dbname,)).fetchall()]


def subscriptions(conn: psycopg.Connection[Any], dbname: str | None = None
                  ) -> list[tuple[str, bool]]:
    """The subscriptions of ``dbname`` (default: the database ``conn`` is connected to):
    name, and whether enabled."""
    return [(str(name), bool(enabled)) for name, enabled in conn.execute(
        "SELECT subname, subenabled FROM pg_subscription WHERE subdbid = (SELECT oid FROM"
        " pg_database WHERE datname = coalesce(%s, current_database())) ORDER BY 1",
        (dbname,)).fetchall()]


def disable_subscriptions(conn: psycopg.Connection[Any]) -> list[str]:
    """Disable every enabled subscription of the database ``conn`` is connected to (its apply
    worker then leaves); the names disabled."""
    names = [name for name, enabled in subscriptions(conn) if enabled]
    for name in names:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
    return names


def left_behind(conn: psycopg.Connection[Any], retained: str) -> list[str]:
    """What a swap left on the retained database that someone must look after, in words."""
    said = [slot.left_on(retained) for slot in slots(conn, retained)]
    if kept := [name for name, enabled in subscriptions(conn, retained) if not enabled]:
        said.append(f"subscription(s) {', '.join(kept)} stay on {retained}, disabled (the"
                    " rollback disabled them to swap production): production's copy holds"
                    " what the backup held; enable there the one that should apply (ALTER"
                    " SUBSCRIPTION ... ENABLE) once production is checked")
    return said
