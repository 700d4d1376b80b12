"""No password from any URL in output, journal, audit log, reports or status, even when the
user's own command prints the URL it was given; also a hostile password (every character a
URL escapes, unicode, a space) given in the URL, in PGPASSWORD or in a .pgpass file."""

from __future__ import annotations

import base64
import html
import itertools
import json
import sqlite3
import sys
import urllib.parse
from pathlib import Path

import psycopg

from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster
from tests.support.shop import Shop, add_free_sample

LEAKY_MIGRATE = ('echo "connecting to $DATABASE_URL"; echo "PGPASSWORD-like: $DATABASE_URL" >&2; '
                 'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"')


def secrets_of(shop: Shop) -> set[str]:
    raw = {demo.APP_PASSWORD, shop.cluster.password}
    return raw | {urllib.parse.quote(s, safe="") for s in raw}


def test_no_password_anywhere_after_a_rollback(shop: Shop) -> None:
    add_free_sample(shop.prod_url)
    shop.configure(demo.BAD_MIGRATION, migrate=LEAKY_MIGRATE)
    done = shop.run_window()
    assert done.returncode == 1, done.stderr

    state = shop.folder / ".window"
    places = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "status": shop.window("status").stdout,
        "status --json": shop.window("status", "--json").stdout,
        "audit.jsonl": (state / "audit.jsonl").read_text(),
    }
    for path in state.glob("journal.sqlite*"):
        places[path.name] = path.read_bytes().decode("utf-8", "replace")

    for where, text in places.items():
        for secret in secrets_of(shop):
            assert secret not in text, f"a password leaked into {where}"
    journal = places["journal.sqlite"] + places.get("journal.sqlite-wal", "")
    assert "connecting to postgresql://shop_app:***@" in journal, "the output was not kept"


# ---- a hostile password, in the URL, in PGPASSWORD and in a .pgpass file ------------------

HOSTILE_ROLE = "hostile_app"
# Every character a URL must escape, an escape written literally, a space, unicode, and
# what HTML, SQL and the shell quote: each is a way for a redaction to miss it.
HOSTILE_PASSWORD = "Hx:p@ss/w%40rd pässwörd€&'q"
HALVES = HOSTILE_PASSWORD.split(" ")  # libpq splitting it badly would leak one of these
_hostile_names = itertools.count(1)
# The user's commands print what they were given: the URL, libpq's variables, and the
# password itself as a tool might (decoded, JSON-escaped, form-encoded).
SHOW_PASSWORD = (
    "import json, os, sys, urllib.parse as u; p = u.urlsplit(os.environ['DATABASE_URL'])"
    ".password; p = u.unquote(p) if p else os.environ.get('PGPASSWORD', '');"
    " print(p, json.dumps({'password': p}), u.quote_plus(p), file=sys.stderr)")
PRINTS_EVERYTHING = ('echo "connecting to $DATABASE_URL"; env | grep -E "^(PG|DATABASE_URL)"'
                     f' | sort >&2; {sys.executable} -c "{SHOW_PASSWORD}";'
                     ' psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"')
BANNER_PRINTS_URL = 'echo "banner for $DATABASE_URL"; echo on >> banner.log'


def forms(secret: str) -> set[str]:
    """Every encoding a password could be printed in."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret),
            urllib.parse.quote_plus(secret), json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret),
            html.escape(secret, quote=False), repr(secret)[1:-1],
            base64.b64encode(secret.encode()).decode()}


HOSTILE_FORMS = forms(HOSTILE_PASSWORD) | {f for half in HALVES for f in forms(half)}


def hostile_shop(cluster: Cluster, folder: Path, *, password_in_url: bool) -> Shop:
    """Production and staging owned by a role whose password is hostile; the URLs carry it
    percent-encoded, or carry none (PGPASSWORD or a .pgpass file supplies it)."""
    if not cluster.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{HOSTILE_ROLE}'"):
        cluster.psql(f"CREATE ROLE {HOSTILE_ROLE} LOGIN CREATEDB;"
                     f" GRANT pg_signal_backend TO {HOSTILE_ROLE}")
        quoted = HOSTILE_PASSWORD.replace("'", "''")
        cluster.psql(f"ALTER ROLE {HOSTILE_ROLE} PASSWORD '{quoted}'")
    n = next(_hostile_names)
    urls = {}
    for db in (f"hostile{n}", f"hostile{n}_staging"):
        cluster.psql(f"CREATE DATABASE {db} OWNER {HOSTILE_ROLE}")
        with_password = cluster.url(db, user=HOSTILE_ROLE, password=HOSTILE_PASSWORD)
        with psycopg.connect(with_password, autocommit=True) as conn:
            conn.execute(demo.SHOP_SCHEMA)  # type: ignore[arg-type]
        urls[db] = with_password if password_in_url else \
            f"postgresql://{HOSTILE_ROLE}@127.0.0.1:{cluster.port}/{db}"
    made = Shop(cluster, folder, f"hostile{n}", f"hostile{n}_staging", *urls.values())
    made.configure(migrate=PRINTS_EVERYTHING, banner_on=BANNER_PRINTS_URL)
    return made


def every_artefact(shop: Shop, outputs: dict[str, str]) -> dict[str, str]:
    """What anyone could read after the windows: their output, every file in the project
    (state folder, journal, audit log, reports, backups' manifests), every text in every
    table of the journal, and what status, plan, history and report print."""
    found = dict(outputs)
    for args in (("status",), ("status", "--json"), ("plan",), ("history",), ("report",),
                 ("backups",)):
        done = shop.window(*args)
        found[f"window {' '.join(args)}"] = done.stdout + done.stderr
    for path in shop.folder.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            found[str(path.relative_to(shop.folder))] = \
                path.read_bytes().decode("utf-8", "replace")
    journal = sqlite3.connect(shop.folder / ".window" / "journal.sqlite")
    try:
        tables = [row[0] for row in journal.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            rows = journal.execute(f'SELECT * FROM "{table}"').fetchall()
            found[f"journal table {table}"] = "\n".join(repr(row) for row in rows) + "\n" + \
                "\n".join(str(value) for row in rows for value in row)
    finally:
        journal.close()
    for expected in ("journal table runs", ".window/audit.jsonl", ".window/report.md",
                     ".window/report.html", "window history"):
        assert expected in found, f"{expected} was not read"
    assert any(name.startswith(".window/reports/") for name in found), "no reports/ read"
    return found


def assert_nowhere(places: dict[str, str], secrets: set[str]) -> None:
    leaks = [f"{secret!r} in {where}" for where, text in places.items()
             for secret in secrets if secret in text]
    assert not leaks, "a password leaked: " + "; ".join(leaks[:10])


def test_a_hostile_password_in_the_url_is_never_printed(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    """A window that completes, then one that fails and rolls back, both printing their URL
    and libpq's variables: the password is in no artefact, in any encoding."""
    shop = hostile_shop(cluster, tmp_path / "project", password_in_url=True)
    completed = shop.run_window()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    add_free_sample(shop.prod_url)
    shop.configure(demo.BAD_MIGRATION, migrate=PRINTS_EVERYTHING, banner_on=BANNER_PRINTS_URL)
    rolled_back = shop.run_window()
    assert rolled_back.returncode == 1, rolled_back.stdout + rolled_back.stderr

    places = every_artefact(shop, {
        "stdout (completed)": completed.stdout, "stderr (completed)": completed.stderr,
        "stdout (rolled back)": rolled_back.stdout, "stderr (rolled back)": rolled_back.stderr})
    assert_nowhere(places, HOSTILE_FORMS | secrets_of(shop))
    kept = "".join(places.values())
    assert f"connecting to postgresql://{HOSTILE_ROLE}:***@" in kept, "output not kept"
    assert f"DATABASE_URL=postgresql://{HOSTILE_ROLE}:***@" in kept, "env was not printed"
    assert '{"password": "***"}' in kept, "the password was not printed: the test proves nothing"
    assert "rolled_back" in places["window history"] and "completed" in places["window history"]


def test_a_hostile_password_from_pgpassword_is_never_printed(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    """The URL holds no password; PGPASSWORD does, and every command inherits it."""
    shop = hostile_shop(cluster, tmp_path / "project", password_in_url=False)
    shop.env["PGPASSWORD"] = HOSTILE_PASSWORD

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    places = every_artefact(shop, {"stdout": done.stdout, "stderr": done.stderr})
    assert_nowhere(places, HOSTILE_FORMS)
    assert '{"password": "***"}' in "".join(places.values()), "the password was never printed"


def test_a_hostile_password_from_a_pgpass_file_is_never_printed(cluster: Cluster,
                                                                tmp_path: Path) -> None:
    """The URL holds no password; a .pgpass file (PGPASSFILE) does. The window never sees
    it, so nothing it writes may hold it either, through a failure and a rollback."""
    shop = hostile_shop(cluster, tmp_path / "project", password_in_url=False)
    pgpass = tmp_path / "pgpass"
    escaped = HOSTILE_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    pgpass.write_text(f"127.0.0.1:{cluster.port}:*:{HOSTILE_ROLE}:{escaped}\n")
    pgpass.chmod(0o600)
    shop.env["PGPASSFILE"] = str(pgpass)
    add_free_sample(cluster.url(shop.prod_db, user=HOSTILE_ROLE, password=HOSTILE_PASSWORD))
    shop.configure(demo.BAD_MIGRATION, migrate=PRINTS_EVERYTHING, banner_on=BANNER_PRINTS_URL)

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr  # it connected: it rolled back
    places = every_artefact(shop, {"stdout": done.stdout, "stderr": done.stderr})
    assert_nowhere(places, HOSTILE_FORMS)
    assert f"PGPASSFILE={pgpass}" in "".join(places.values()), "libpq's variables not printed"
