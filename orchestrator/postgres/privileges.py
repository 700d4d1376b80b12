"""Whether this role may roll production back, asked before production changes.

A rollback creates a copy of production (the standby, or a restore of the archive), renames
production aside and the copy into its place, and ends every session in the way. Each step
needs a privilege that an ordinary deploy role may lack, and a rollback that finds out when
it is already needed leaves production half-migrated behind the banner. So preflight and
``window plan`` ask the server first: what is missing, and the statement that grants it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from orchestrator.errors import PhaseFailed
from orchestrator.postgres import pg, replication


class Lack(NamedTuple):
    what: str   # what this role lacks, and which step of the rollback needs it
    grant: str  # the statement (run by a role that may) that gives it


class RollbackPath(NamedTuple):
    """The rollback path as this role sees it: what blocks it, and what would only slow a
    person down (sessions it cannot see into, a superuser's session it may not end)."""

    role: str
    lacks: list[Lack]
    notes: list[str]

    def refusal(self) -> str:
        """One sentence for a refusal: every lack, then every statement that grants them."""
        return (f"no rollback would be possible for role {self.role}: it lacks "
                + "; ".join(lack.what for lack in self.lacks)
                + ". Grant it, as a role that may: "
                + " ".join(dict.fromkeys(lack.grant for lack in self.lacks)))


def _quoted(name: str) -> str:
    return sql.Identifier(name).as_string(None)


# The owners of what pg_restore recreates (and then gives to its owner with ALTER ... OWNER,
# which needs membership in that role): relations, schemas, functions and types outside the
# system schemas and outside extensions. pg_database_owner owns the public schema by default
# and is never named in an ALTER ... OWNER.
_OWNERS = (
    "WITH owned(owner) AS ("
    " SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE " + pg.own_objects("pg_class", "c") +
    " UNION SELECT n.nspowner FROM pg_namespace n"
    " WHERE " + pg.own_objects("pg_namespace", "n") +
    " UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE " + pg.own_objects("pg_proc", "p") +
    " UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE " + pg.own_objects("pg_type", "t") + ")"
    " SELECT DISTINCT r.rolname FROM owned o JOIN pg_roles r ON r.oid = o.owner"
    " WHERE r.rolname <> 'pg_database_owner'"
    " AND NOT pg_has_role(current_user, r.oid, 'MEMBER') ORDER BY 1")


def rollback_path(conn: psycopg.Connection[Any], *, creates_databases: bool = True
                  ) -> RollbackPath:
    """What this role (connected to production) lacks for its rollback: by swap (it creates
    a copy, and renames), or in place with no standby (``creates_databases`` false: it
    empties production and restores into it)."""
    row = conn.execute(
        "SELECT current_database(), r.rolname, r.rolsuper, r.rolcreatedb,"
        " pg_get_userbyid(d.datdba),"
        " pg_has_role(current_user, d.datdba, 'USAGE'), t.spcname,"
        " t.spcname = 'pg_default' OR has_tablespace_privilege(t.oid, 'CREATE'),"
        " pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),"
        " pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
        " FROM pg_roles r, pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace"
        " WHERE r.rolname = current_user AND d.datname = current_database()").fetchone()
    if row is None:  # the role and the database it is connected to exist, or it would not be
        raise PhaseFailed("this role or its database vanished while it was connected")
    database, role, superuser, createdb, owner, owns, space, in_space, signals, sees = row
    notes = [f"a rollback leaves {slot.left_on('the retained database')}"
              for slot in replication.slots(conn, database)]
    if superuser:
        return RollbackPath(role, [], notes)
    me = _quoted(role)
    lacks = []
    if enabled := [name for name, on in replication.subscriptions(conn) if on]:
        lacks.append(Lack(f"the right to disable production's subscription(s)"
                          f" {', '.join(enabled)} (their apply workers hold production open;"
                          " only their owner, a superuser, may stop them)",
                          " ".join(f"ALTER SUBSCRIPTION {_quoted(name)} DISABLE;"
                                   for name in enabled)
                          + " (before the window, as their owner; or run window as a"
                          " superuser)"))
    if not createdb and creates_databases:
        lacks.append(Lack("CREATEDB (to create the copy a rollback swaps in, and to rename"
                          " production; or [backup] rollback = \"in_place\" with verify ="
                          " \"list\")", f"ALTER ROLE {me} CREATEDB;"))
    if not owns:
        lacks.append(Lack(f"the privileges of production's owner {owner} (to rename or"
                          " empty production, and give its copy its owner)",
                          f"GRANT {_quoted(owner)} TO {me};"))
    if not in_space and creates_databases:
        lacks.append(Lack(f"CREATE on the tablespace {space} (where production lives, and"
                          " so its copy)", f"GRANT CREATE ON TABLESPACE {_quoted(space)} TO {me};"))
    for (other,) in conn.execute(_OWNERS).fetchall():
        if other != owner or owns:
            lacks.append(Lack(f"membership in {other} (the restore gives {other}'s objects"
                              " back to it)", f"GRANT {_quoted(other)} TO {me};"))
    for (extension,) in conn.execute(
            "SELECT e.extname FROM pg_extension e JOIN pg_available_extension_versions v"
            " ON v.name = e.extname AND v.version = e.extversion"
            " WHERE e.extname <> 'plpgsql' AND NOT v.trusted ORDER BY 1").fetchall():
        lacks.append(Lack(f"the right to create the extension {extension} in the copy (only"
                          " a superuser may: it is not trusted)",
                          f"ALTER ROLE {me} SUPERUSER;"))
    others = conn.execute(
        "SELECT usename::text, count(*), bool_or(coalesce((SELECT rolsuper FROM pg_roles"
        " WHERE oid = usesysid), false)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND usesysid IS NOT NULL AND NOT pg_has_role(current_user, usesysid, 'USAGE')"
        " GROUP BY 1 ORDER BY 1").fetchall()
    plain = [(user, count) for user, count, su in others if not su]
    shown = ", ".join(f"{user} ({count})" for user, count in plain)
    if plain and signals:
        notes.append(f"other roles' sessions connected now: {shown}; a rollback's swap ends"
                      " them (this role holds pg_signal_backend)")
    if plain and not signals:
        lacks.append(Lack(f"pg_signal_backend (to end the sessions of other roles that a swap"
                          f" must end: {shown} connected now)",
                          f"GRANT pg_signal_backend TO {me};"))
    notes += [f"a superuser's sessions ({user}, {count} connected now) can be ended only by a"
              " superuser: a rollback would wait for them" for user, count, su in others if su]
    if not sees:
        notes.append("other roles' sessions are hidden from this role (their state and"
                     f" address): GRANT pg_read_all_stats TO {me}; names them in full")
    return RollbackPath(role, lacks, notes)
