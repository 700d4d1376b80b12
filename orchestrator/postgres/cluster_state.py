"""What a migration can change beyond its database, where no restore reaches: roles, their
memberships, role and database settings, ALTER SYSTEM settings, tablespaces. ``record`` before
the migration and after the rollback's restore; ``differences`` names each change that survived
with the SQL that undoes it. The state is JSON (the journal keeps it) and never holds a password
or its hash: a dropped role comes back without its password; a changed one is not seen.

Every role may read roles, memberships, role settings and tablespaces. ALTER SYSTEM's file
(``pg_file_settings``) is the superuser's alone on 15, even with ``pg_read_all_settings``, unless
granted (SELECT on it and EXECUTE on ``pg_show_all_file_settings()``). Without that, the
settings the server applied from its configuration files stand in: an ALTER SYSTEM shows only
after a reload; not seen are a setting waiting for a restart, the settings hidden from ordinary
roles (``shared_preload_libraries``, ``ssl_*``...) and one the reader's role or database sets.

An undo may hold several statements, one a line: run each on its own, as ``psql`` does (ALTER
SYSTEM and CREATE/DROP TABLESPACE refuse a transaction block), in the order given: roles come
back before their grants; created roles are dropped last (DROP ROLE still refuses while one owns
objects or holds privileges in any database, the one kept as evidence included).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import psycopg
from psycopg import sql


class Role(TypedDict):  # as pg_roles shows it, less the password
    name: str
    rolsuper: bool
    rolinherit: bool
    rolcreaterole: bool
    rolcreatedb: bool
    rolcanlogin: bool
    rolreplication: bool
    rolbypassrls: bool
    rolconnlimit: int
    rolvaliduntil: str | None  # in UTC; None when the password never expires


class Membership(TypedDict):
    role: str
    member: str
    admin_option: bool


class RoleSetting(TypedDict):
    role: str | None  # None: every role (ALTER DATABASE ... SET)
    database: str | None  # None: every database (ALTER ROLE ... SET)
    settings: list[str]  # "name=value", as pg_db_role_setting stores them


class Tablespace(TypedDict):
    name: str
    owner: str
    location: str


class ClusterState(TypedDict):
    roles: list[Role]  # without the predefined pg_* roles
    memberships: list[Membership]  # memberships in pg_* roles included
    role_settings: list[RoleSetting]
    system_settings: dict[str, str]
    # pg_file_settings: postgresql.auto.conf itself; pg_settings: what the server applied.
    system_settings_from: Literal["pg_file_settings", "pg_settings"]
    tablespaces: list[Tablespace]  # without pg_default and pg_global


@dataclass(frozen=True)
class Difference:
    what: str  # one sentence for the person who undoes it
    undo: str  # the statements that undo it, one a line


_ROLES = (
    "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,"
    " rolreplication, rolbypassrls, rolconnlimit, CASE WHEN rolvaliduntil = 'infinity' THEN"
    " NULL WHEN isfinite(rolvaliduntil) THEN to_char(rolvaliduntil AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD HH24:MI:SS.US+00') ELSE rolvaliduntil::text END"
    " FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
# The predefined roles' memberships in one another are the server's own.
_MEMBERSHIPS = (
    "SELECT r.rolname, m.rolname, bool_or(a.admin_option) FROM pg_auth_members a"
    " JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
    " WHERE m.rolname !~ '^pg_' GROUP BY 1, 2 ORDER BY 1, 2")
_ROLE_SETTINGS = (
    "SELECT r.rolname, d.datname, s.setconfig FROM pg_db_role_setting s"
    " LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase"
    " ORDER BY 1 NULLS FIRST, 2 NULLS FIRST")
_FILE_READABLE = (
    "SELECT has_table_privilege('pg_catalog.pg_file_settings', 'SELECT') AND"
    " has_function_privilege('pg_catalog.pg_show_all_file_settings()', 'EXECUTE')")
_AUTO_CONF = (
    "SELECT DISTINCT ON (name) name, setting FROM pg_file_settings WHERE name IS NOT NULL"
    " AND sourcefile LIKE '%/postgresql.auto.conf' ORDER BY name, seqno DESC")
_APPLIED = (
    "SELECT name, current_setting(name) FROM pg_settings"
    " WHERE source = 'configuration file' ORDER BY name")
_TABLESPACES = (
    "SELECT spcname, pg_get_userbyid(spcowner), pg_tablespace_location(oid)"
    " FROM pg_tablespace WHERE spcname !~ '^pg_' ORDER BY 1")


def record(conn: psycopg.Connection[Any]) -> ClusterState:
    """The cluster-level state ``conn``'s role can see (the module's docstring says what)."""
    readable = conn.execute(_FILE_READABLE).fetchone()
    from_files = bool(readable and readable[0])
    return {
        "roles": [Role(name=r[0], rolsuper=r[1], rolinherit=r[2], rolcreaterole=r[3],
                       rolcreatedb=r[4], rolcanlogin=r[5], rolreplication=r[6],
                       rolbypassrls=r[7], rolconnlimit=r[8], rolvaliduntil=r[9])
                  for r in conn.execute(_ROLES)],
        "memberships": [Membership(role=r, member=m, admin_option=a)
                        for r, m, a in conn.execute(_MEMBERSHIPS)],
        "role_settings": [RoleSetting(role=r, database=d, settings=list(s))
                          for r, d, s in conn.execute(_ROLE_SETTINGS)],
        "system_settings": dict(conn.execute(_AUTO_CONF if from_files else _APPLIED)),
        "system_settings_from": "pg_file_settings" if from_files else "pg_settings",
        "tablespaces": [Tablespace(name=n, owner=o, location=loc)
                        for n, o, loc in conn.execute(_TABLESPACES)],
    }


def differences(before: ClusterState, after: ClusterState) -> list[Difference]:
    """What changed from ``before`` to ``after``, in the order its undo must run."""
    restored, created = _roles(before["roles"], after["roles"])
    return [*restored, *_memberships(before["memberships"], after["memberships"]),
            *_role_settings(before["role_settings"], after["role_settings"]),
            *_system_settings(before, after),
            *_tablespaces(before["tablespaces"], after["tablespaces"]), *created]


_FLAGS = {"rolsuper": "SUPERUSER", "rolinherit": "INHERIT", "rolcreaterole": "CREATEROLE",
          "rolcreatedb": "CREATEDB", "rolcanlogin": "LOGIN", "rolreplication": "REPLICATION",
          "rolbypassrls": "BYPASSRLS"}
_ATTRIBUTES = [*_FLAGS, "rolconnlimit", "rolvaliduntil"]


def _roles(before: list[Role], after: list[Role]) -> tuple[list[Difference], list[Difference]]:
    """Dropped and changed roles (undone first), and created ones (dropped last)."""
    old: dict[str, Mapping[str, Any]] = {r["name"]: r for r in before}
    new: dict[str, Mapping[str, Any]] = {r["name"]: r for r in after}
    first, last = [], []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            first.append(Difference(
                f"role {name} was dropped (its password, if it had one, cannot be restored:"
                " set it again with ALTER ROLE ... PASSWORD)",
                f"CREATE ROLE {_ident(name)} WITH {_options(old[name], _ATTRIBUTES)};"))
        elif name not in old:
            last.append(Difference(f"role {name} was created", f"DROP ROLE {_ident(name)};"))
        elif changed := [a for a in _ATTRIBUTES if old[name][a] != new[name][a]]:
            was = _options(old[name], changed)
            first.append(Difference(
                f"role {name} changed from {was} to {_options(new[name], changed)}",
                f"ALTER ROLE {_ident(name)} WITH {was};"))
    return first, last


def _options(role: Mapping[str, object], attributes: Iterable[str]) -> str:
    """The CREATE/ALTER ROLE options that give ``role`` these attributes."""
    words = []
    for attribute in attributes:
        value = role[attribute]
        if attribute in _FLAGS:
            words.append(("" if value else "NO") + _FLAGS[attribute])
        elif attribute == "rolconnlimit":
            words.append(f"CONNECTION LIMIT {value}")
        else:
            words.append(f"VALID UNTIL {_literal(str(value or 'infinity'))}")
    return " ".join(words)


def _memberships(before: list[Membership], after: list[Membership]) -> list[Difference]:
    old = {(m["role"], m["member"]): m["admin_option"] for m in before}
    new = {(m["role"], m["member"]): m["admin_option"] for m in after}
    found = []
    for role, member in sorted(old.keys() | new.keys()):
        was, now = old.get((role, member)), new.get((role, member))
        grant = f"GRANT {_ident(role)} TO {_ident(member)}"
        if now is None:
            found.append(Difference(f"{member} is no longer a member of {role}",
                                    grant + (" WITH ADMIN OPTION;" if was else ";")))
        elif was is None:
            found.append(Difference(
                f"{member} became a member of {role}" + (" with ADMIN OPTION" if now else ""),
                f"REVOKE {_ident(role)} FROM {_ident(member)};"))
        elif now != was:
            found.append(Difference(
                f"{member} {'gained' if now else 'lost'} ADMIN OPTION on {role}",
                f"REVOKE ADMIN OPTION FOR {_ident(role)} FROM {_ident(member)};" if now
                else grant + " WITH ADMIN OPTION;"))
    return found


def _role_settings(before: list[RoleSetting], after: list[RoleSetting]) -> list[Difference]:
    old, new = _by_scope(before), _by_scope(after)
    found = []
    for role, database in sorted(old.keys() | new.keys(), key=lambda s: (s[0] or "", s[1] or "")):
        if role is None:
            words, scope = f"ALTER DATABASE {database}", f"ALTER DATABASE {_ident(database)}"
        else:
            words, scope = f"ALTER ROLE {role}", f"ALTER ROLE {_ident(role)}"
            if database is not None:
                words, scope = (f"{words} IN DATABASE {database}",
                                f"{scope} IN DATABASE {_ident(database)}")
        found += _settings(words, scope, old.get((role, database), {}),
                           new.get((role, database), {}))
    return found


def _by_scope(rows: list[RoleSetting]) -> dict[tuple[str | None, str | None], dict[str, str]]:
    return {(row["role"], row["database"]): dict(s.split("=", 1) for s in row["settings"])
            for row in rows}


def _system_settings(before: ClusterState, after: ClusterState) -> list[Difference]:
    if before["system_settings_from"] != after["system_settings_from"]:
        return [Difference(
            f"ALTER SYSTEM settings were read from {before['system_settings_from']} before and"
            f" from {after['system_settings_from']} after (the recording role's privileges"
            " changed): they were not compared", "-- compare postgresql.auto.conf by hand")]
    return _settings("ALTER SYSTEM", "ALTER SYSTEM", before["system_settings"],
                     after["system_settings"], then="\nSELECT pg_reload_conf();")


def _settings(words: str, scope: str, old: Mapping[str, str], new: Mapping[str, str],
              then: str = "") -> list[Difference]:
    found = []
    for name in sorted(old.keys() | new.keys()):
        was, now = old.get(name), new.get(name)
        if was == now:
            continue
        what = f"{words} reset {name} (was {was})" if now is None else \
            f"{words} set {name} to {now} (was {'unset' if was is None else was})"
        undo = f"{scope} RESET {_guc(name)};" if was is None else \
            f"{scope} SET {_guc(name)} TO {_value(name, was)};"
        found.append(Difference(what, undo + then))
    return found


def _tablespaces(before: list[Tablespace], after: list[Tablespace]) -> list[Difference]:
    old, new = {t["name"]: t for t in before}, {t["name"]: t for t in after}
    found = []
    for name in sorted(old.keys() | new.keys()):
        was, now = old.get(name), new.get(name)
        if was is None:
            found.append(Difference(f"tablespace {name} was created",
                                    f"DROP TABLESPACE {_ident(name)};"))
        elif now is None or was["location"] != now["location"]:
            create = f"CREATE TABLESPACE {_ident(name)} OWNER {_ident(was['owner'])}" \
                f" LOCATION {_literal(was['location'])};"
            found.append(Difference(
                f"tablespace {name} was dropped (what it held is gone; its folder must exist,"
                " empty, to create it again)", create) if now is None else Difference(
                f"tablespace {name} moved from {was['location']} to {now['location']}",
                f"DROP TABLESPACE {_ident(name)};\n{create}"))
        elif was["owner"] != now["owner"]:
            found.append(Difference(
                f"tablespace {name}'s owner changed from {was['owner']} to {now['owner']}",
                f"ALTER TABLESPACE {_ident(name)} OWNER TO {_ident(was['owner'])};"))
    return found


# Settings whose stored value is a list of quoted names: the server quotes each literal given,
# so one literal holding the whole list would become a single name.
_NAME_LISTS = {"search_path", "temp_tablespaces", "session_preload_libraries",
               "shared_preload_libraries", "local_preload_libraries", "unix_socket_directories"}
_LIST_ITEM = re.compile(r'"((?:[^"]|"")*)"|([^",\s]+)')
_PLAIN_GUC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _value(name: str, value: str) -> str:
    """The SET operand that stores ``value`` again, as pg_dump writes it."""
    if name.lower() not in _NAME_LISTS:
        return _literal(value)
    items = [bare or quoted.replace('""', '"') for quoted, bare in _LIST_ITEM.findall(value)]
    return ", ".join(_literal(item) for item in items or [""])


def _guc(name: str) -> str:
    return name if _PLAIN_GUC.fullmatch(name) else _ident(name)


def _ident(name: str | None) -> str:
    return sql.Identifier(str(name)).as_string(None)


def _literal(value: str) -> str:
    return sql.Literal(value).as_string(None).strip()
