"""What a restore cannot bring back, recorded by an ordinary role: a created role, a grant, role
and database settings, ALTER SYSTEM and a tablespace each show with the SQL that undoes it, and
running that SQL leaves nothing to show. Roles and tablespaces are cluster-wide and other tests
share the cluster: every name here carries a tag of its own, and only those are compared."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from orchestrator.postgres import cluster_state
from orchestrator.postgres.cluster import SUPERUSER, Cluster
from orchestrator.postgres.cluster_state import ClusterState, Difference
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Tagged:
    """This test's names, and the URL of its ordinary role (LOGIN CREATEDB, nothing more)."""

    tag: str
    reader_url: str
    password: str


@pytest.fixture
def tagged(cluster: Cluster) -> Iterator[Tagged]:
    tag = f"cs{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(8)}"
    cluster.psql(f"CREATE ROLE {tag}_window LOGIN CREATEDB PASSWORD '{password}'")
    try:
        yield Tagged(tag, cluster.url(user=f"{tag}_window", password=password), password)
    finally:
        cluster.psql(f"DROP TABLESPACE IF EXISTS {tag}_fast")
        shutil.rmtree(cluster.root / f"{tag}_fast", ignore_errors=True)
        cluster.psql(f"ALTER DATABASE postgres RESET {tag}.flag")
        cluster.psql("DROP ROLE IF EXISTS " + ", ".join(
            f"{tag}_{name}" for name in ("reporting", "gone", "app_owner", "secret", "window")))


def state(url: str) -> ClusterState:
    """What ``url``'s role records, through JSON as the journal keeps it."""
    with psycopg.connect(url, autocommit=True) as conn:
        recorded = cluster_state.record(conn)
    again: ClusterState = json.loads(json.dumps(recorded))
    assert again == recorded
    return again


def mine(tag: str, found: list[Difference]) -> list[Difference]:
    """The differences this test made (work_mem is the one ALTER SYSTEM it makes)."""
    return [d for d in found if tag in d.what or "work_mem" in d.what]


def work_mem_seen(url: str, value: str) -> bool:
    """Whether a new session of ``url``'s role runs with ``value``: the last reload applied."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('work_mem')").fetchone()
    return bool(row and row[0] == value)


def test_an_ordinary_role_records_the_cluster_without_any_password(cluster: Cluster,
                                                                   tagged: Tagged) -> None:
    t, secret = tagged.tag, f"hunter2-{tagged.tag}"
    cluster.psql(f"CREATE ROLE {t}_secret LOGIN PASSWORD '{secret}'"
                 " VALID UNTIL '2030-01-02 03:04:05.5+02'")
    hashes = cluster.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname IN"
                          f" ('{t}_secret', '{t}_window')").split()

    recorded = state(tagged.reader_url)

    roles = {role["name"]: role for role in recorded["roles"]}
    assert roles[f"{t}_window"] == {
        "name": f"{t}_window", "rolsuper": False, "rolinherit": True, "rolcreaterole": False,
        "rolcreatedb": True, "rolcanlogin": True, "rolreplication": False,
        "rolbypassrls": False, "rolconnlimit": -1, "rolvaliduntil": None}
    assert roles[f"{t}_secret"]["rolvaliduntil"] == "2030-01-02 01:04:05.500000+00"
    assert SUPERUSER in roles
    assert not [name for name in roles if name.startswith("pg_")]
    # An ordinary role may not read ALTER SYSTEM's file; the superuser may.
    assert recorded["system_settings_from"] == "pg_settings"
    assert state(cluster.url())["system_settings_from"] == "pg_file_settings"
    text = json.dumps(recorded)
    assert len(hashes) == 2 and all(h.startswith("SCRAM-SHA-256$") for h in hashes)
    for never in (secret, tagged.password, *hashes, "SCRAM-SHA-256", "********"):
        assert never not in text


def test_each_change_shows_with_the_sql_that_undoes_it(cluster: Cluster, tagged: Tagged) -> None:
    t, su = tagged.tag, cluster.psql
    su(f"CREATE ROLE {t}_app_owner NOLOGIN;"
       f' ALTER ROLE {t}_app_owner SET search_path = "$user", public, "My Schema";'
       f" CREATE ROLE {t}_gone LOGIN PASSWORD 'gone-pw' CONNECTION LIMIT 3"
       f" VALID UNTIL '2030-01-01 00:00:00+00';"
       f" GRANT {t}_app_owner TO {t}_gone WITH ADMIN OPTION")
    folder = cluster.root / f"{t}_fast"  # the cluster's folder: its OS user reaches it
    folder.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, SUPERUSER)
    readers = [tagged.reader_url, cluster.url()]  # from pg_settings, from pg_file_settings
    before = [state(url) for url in readers]

    try:
        # What a migration might do, as a superuser.
        su(f"CREATE ROLE {t}_reporting LOGIN PASSWORD 'reporting-pw';"
           f" GRANT {t}_app_owner TO {t}_reporting; GRANT pg_read_all_stats TO {t}_reporting;"
           f" ALTER ROLE {t}_app_owner CREATEDB CONNECTION LIMIT 7;"
           f" ALTER ROLE {t}_app_owner SET search_path = public;"
           f" ALTER ROLE {t}_reporting IN DATABASE postgres SET work_mem = '8MB';"
           f" ALTER DATABASE postgres SET {t}.flag = 'on'; DROP ROLE {t}_gone")
        su("ALTER SYSTEM SET work_mem = '64MB'")
        # The superuser reads the file itself: seen before any reload.
        assert state(cluster.url())["system_settings"]["work_mem"] == "64MB"
        su("SELECT pg_reload_conf()")
        su(f"CREATE TABLESPACE {t}_fast OWNER {t}_app_owner LOCATION '{folder}'")
        wait_until(lambda: work_mem_seen(tagged.reader_url, "64MB"), "the reload")

        expected = [
            Difference(f"role {t}_app_owner changed from NOCREATEDB CONNECTION LIMIT -1 to"
                       " CREATEDB CONNECTION LIMIT 7",
                       f'ALTER ROLE "{t}_app_owner" WITH NOCREATEDB CONNECTION LIMIT -1;'),
            Difference(f"role {t}_gone was dropped (its password, if it had one, cannot be"
                       " restored: set it again with ALTER ROLE ... PASSWORD)",
                       f'CREATE ROLE "{t}_gone" WITH NOSUPERUSER INHERIT NOCREATEROLE'
                       " NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3"
                       " VALID UNTIL '2030-01-01 00:00:00.000000+00';"),
            Difference(f"{t}_gone is no longer a member of {t}_app_owner",
                       f'GRANT "{t}_app_owner" TO "{t}_gone" WITH ADMIN OPTION;'),
            Difference(f"{t}_reporting became a member of {t}_app_owner",
                       f'REVOKE "{t}_app_owner" FROM "{t}_reporting";'),
            Difference(f"{t}_reporting became a member of pg_read_all_stats",
                       f'REVOKE "pg_read_all_stats" FROM "{t}_reporting";'),
            Difference(f"ALTER DATABASE postgres set {t}.flag to on (was unset)",
                       f'ALTER DATABASE "postgres" RESET {t}.flag;'),
            Difference(f'ALTER ROLE {t}_app_owner set search_path to public (was "$user",'
                       ' public, "My Schema")',
                       f'ALTER ROLE "{t}_app_owner" SET search_path TO'
                       " '$user', 'public', 'My Schema';"),
            Difference(f"ALTER ROLE {t}_reporting IN DATABASE postgres set work_mem to 8MB"
                       " (was unset)",
                       f'ALTER ROLE "{t}_reporting" IN DATABASE "postgres" RESET work_mem;'),
            Difference("ALTER SYSTEM set work_mem to 64MB (was unset)",
                       "ALTER SYSTEM RESET work_mem;\nSELECT pg_reload_conf();"),
            Difference(f"tablespace {t}_fast was created", f'DROP TABLESPACE "{t}_fast";'),
            Difference(f"role {t}_reporting was created", f'DROP ROLE "{t}_reporting";'),
        ]
        found = [mine(t, cluster_state.differences(was, state(url)))
                 for was, url in zip(before, readers, strict=True)]
        assert found == [expected, expected]

        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            for difference in expected:
                for statement in difference.undo.split("\n"):
                    admin.execute(statement)
        wait_until(lambda: work_mem_seen(tagged.reader_url, "4MB"), "the reload")

        for was, url in zip(before, readers, strict=True):
            assert mine(t, cluster_state.differences(was, state(url))) == []
    finally:
        su("ALTER SYSTEM RESET work_mem")
        su("SELECT pg_reload_conf()")
