"""Hostile input, generated: whatever a config file or the command line holds, `window` answers
with an exit code and one sentence, never a traceback.

The config loader is driven in-process for volume (every failure a ConfigError, one line,
naming a key); the real CLI runs as a subprocess for a smaller sample. Hypothesis is
derandomized so that CI sees the same examples every time; a failing example it once found
is kept below as an explicit @example.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from orchestrator import config, redact
from orchestrator.commands import plan
from orchestrator.engine import gates
from orchestrator.errors import ConfigError, WindowError

# Subprocesses are slow to shrink (minutes): a failing command line is reported as found.
SUBPROCESS = [Phase.explicit, Phase.reuse, Phase.generate]
FAST = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Passwords these tests register ("postgres" among them) must not mask text in the
    tests that run after them in the same process."""
    saved = set(redact._known)
    yield
    redact._known.clear()
    redact._known.update(saved)


# A config every section of which is present, so that mutations reach every key.
VALID: dict[str, Any] = {
    "window": {"name": "shop-prod", "confirm_phrase": "SHOP-PROD-OK", "state_dir": ".window",
               "require_git_repo": False, "skip_checks": ["no-invalid-indexes"],
               "length": "45m"},
    "state": {"backend": "local", "lease_ttl": "30s"},
    "target": {"url_env": "DATABASE_URL", "maintenance_db": "postgres",
               "connect_timeout": "60s"},
    "staging": {"url_env": "DATABASE_URL_STAGING", "mode": "url", "clone_on": "staging",
                "max_migrate_share": 0.5, "max_age": "24h", "skip": False},
    "backup": {"dir": "backups", "jobs": 2, "compress": "auto", "verify": "restore",
               "on_write_gap": "warn", "when": "before_banner", "write_stats_settle": 1},
    "banner": {"on": "touch maintenance.on", "off": ["rm", "-f", "maintenance.on"]},
    "migrate": {"command": "pnpm prisma migrate deploy", "workdir": "frontend",
                "lock_timeout": "5s", "tool": "prisma", "files": "prisma/migrations",
                "drain_timeout": "30s", "drain_ignore": ["pgbouncer*"]},
    "timeouts": {"staging_dry_run": "15m", "backup": "10m", "banner_on": "2m",
                 "migrate": "5m", "post_check": "5m", "banner_off": "2m", "rollback": "10m"},
    "checks": [
        {"name": "health", "kind": "http", "url": "https://example.com/healthz",
         "expect_status": 200, "expect_json": {"checks.db": "ok"}, "timeout": "30s",
         "headers": {"Authorization": "Bearer t0ken-hostile"}},
        {"name": "orders", "kind": "sql", "query": "SELECT count(*) > 0 FROM orders"},
        {"name": "schema", "kind": "command", "command": "pnpm prisma migrate status",
         "expect_output": "up to date"},
        {"name": "errors", "kind": "log", "path": "logs/*.log", "error_pattern": "^ERROR"},
    ],
    "baseline": [{"name": "orders-by-customer", "query": "SELECT 1", "max_slowdown": 3}],
    "monitor": {"enabled": True, "interval": "2s"},
    "lint": {"enabled": True, "squawk": True, "errors": ["missing-if-not-exists"]},
    "contacts": {"on_call": "Maria +30 691 000 0001", "backup": "Nikos +30 691 000 0002",
                 "db_support": "dba@example.com", "decision_maker": "Eleni +30 691 000 0003"},
    "notify": {"urls_env": "WINDOW_NOTIFY_URLS"},
    "communication": {"during": "Maintenance of $window: $state."},
}
SECTION_MODELS: dict[str, type[Any]] = {
    "window": config.WindowSection, "state": config.StateSection,
    "target": config.TargetSection, "staging": config.StagingSection,
    "backup": config.BackupSection, "banner": config.BannerSection,
    "migrate": config.MigrateSection, "timeouts": config.TimeoutsSection,
    "baseline": config.BaselineSection, "monitor": config.MonitorSection,
    "lint": config.LintSection, "contacts": config.ContactsSection,
    "notify": config.NotifySection, "communication": config.CommunicationSection,
}
CHECK_FIELDS = sorted({name for model in (config.HttpCheck, config.SqlCheck,
                                          config.CommandCheck, config.LogCheck)
                       for name in model.model_fields})

# ---- a TOML writer (the standard library only reads TOML) -------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    """A basic string; quotes, backslashes and anything unprintable escaped by code point."""
    return '"' + "".join(ch if ch.isprintable() and ch not in '"\\' else
                         f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"
                         for ch in text) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    opened, closed = "", ""
    while isinstance(value, list | dict) and len(value) == 1:  # deep nesting, unrecursed
        if isinstance(value, list):
            opened, closed, value = opened + "[", "]" + closed, value[0]
        else:
            ((key, value),) = value.items()
            opened, closed = f"{opened}{{{toml_key(key)} = ", "}" + closed
    return opened + _toml_scalar_or_table(value) + closed


def _toml_scalar_or_table(value: Any) -> str:  # noqa: PLR0911 - one return per TOML type
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else {math.inf: "inf", -math.inf: "-inf"}.get(
            value, repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    return str(value.isoformat())  # dates, times, datetimes


def toml_dumps(mapping: dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in mapping.items())


def test_the_toml_writer_round_trips() -> None:
    assert tomllib.loads(toml_dumps(VALID)) == VALID
    odd = {"a\nb": ["\x00\x1b\x7f\"\\ é€😀", math.inf, 10**30], "": {"x y": -0.0},
           "deep": nested(5, [1, {"k": []}], "dict")}
    assert tomllib.loads(toml_dumps(odd)) == odd
    assert toml_dumps({"x": nested(5000, 1, "list")}).startswith("x = " + "[" * 5000 + "1]")


# ---- strategies -------------------------------------------------------------------------

HOSTILE_STRINGS = ["", " ", "\x00", "\n", "a\nb", "\x1b[31mred", "0", "-1", "nan", "inf",
                   "1e999", "9" * 400 + "h", "90s", "10m", "1h", "250ms", "0s", "-5m",
                   "pässwörd€", "日本語", "😀", "../../etc/passwd", "/dev/zero", "C:\\x",
                   "s3://bucket/prefix", "http://127.0.0.1:1/", "https://u:p@h/", "local",
                   "s3", "clone", "prisma", "alembic", "none", "http", "sql", "log",
                   "command", "file", "([", "$(reboot)", "x" * 100_000]
scalars = st.one_of(
    st.text(max_size=40), st.sampled_from(HOSTILE_STRINGS),
    st.integers(), st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**400, 65]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0]),
    st.booleans(), st.datetimes(), st.datetimes(timezones=st.just(UTC)), st.dates(),
    st.times(),
)
keys = st.one_of(st.text(max_size=15), st.sampled_from(sorted(
    {*SECTION_MODELS, *(f for m in SECTION_MODELS.values() for f in m.model_fields),
     *CHECK_FIELDS, "checks", "queries", "rds", "instance_id"})))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


def nested(depth: int, leaf: Any, kind: str) -> Any:
    for _ in range(depth):
        leaf = [leaf] if kind == "list" else {"k": leaf}
    return leaf


class Deep(list[Any]):
    """A value nested ``depth`` deep, one list level around ``nested``'s: shown by its recipe,
    so hypothesis can print a failing example (its printer recurses once per level and gave
    a RecursionError instead of the example)."""

    def __init__(self, depth: int, leaf: Any, kind: str) -> None:
        super().__init__([nested(depth, leaf, kind)])
        self.recipe = f"Deep({depth}, {leaf!r}, {kind!r})"

    def __repr__(self) -> str:
        return self.recipe


deep_values = st.builds(Deep, st.integers(10, 3000), scalars, st.sampled_from(["list", "dict"]))


@st.composite
def section_and_key(draw: st.DrawFn) -> tuple[str, str]:
    """Mostly a key the config knows (so the rest of it stays valid), sometimes any."""
    section = draw(st.sampled_from([*SECTION_MODELS, "checks"]) | st.text(max_size=10)
                   if draw(st.integers(0, 9)) == 0 else st.sampled_from([*SECTION_MODELS,
                                                                       "checks"]))
    model = SECTION_MODELS.get(section)
    known = sorted(model.model_fields) if model else CHECK_FIELDS
    return section, draw(keys if draw(st.integers(0, 5)) == 0 else st.sampled_from(known))


@st.composite
def mutation(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    section, key = draw(section_and_key())
    value = draw(st.one_of(scalars, scalars, values, deep_values))
    op = draw(st.sampled_from(["set"] * 6 + ["check"] * 3 + ["replace", "drop", "drop_key"]))
    index = draw(st.integers(0, 3))  # which [[checks]] entry

    def apply(raw: dict[str, Any]) -> None:
        table = raw.get(section)
        if op == "replace" or (op == "set" and not isinstance(table, dict)):
            raw[section] = value if op == "replace" else {key: value}
        elif op == "set" and isinstance(table, dict):
            table[key] = value
        elif op == "drop":
            raw.pop(section, None)
        elif op == "drop_key" and isinstance(table, dict):
            table.pop(key, None)
        elif op == "check" and isinstance(raw.get("checks"), list) and raw["checks"] \
                and isinstance(entry := raw["checks"][index % len(raw["checks"])], dict):
            entry[key if key in CHECK_FIELDS else "name"] = value
    return apply


@st.composite
def hostile_mappings(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with one to three things made wrong, or one made from nothing."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.dictionaries(keys, values, max_size=6))
    raw: dict[str, Any] = tomllib.loads(toml_dumps(VALID))  # a deep copy
    for apply in draw(st.lists(mutation(), min_size=1, max_size=3)):
        apply(raw)
    return raw


@st.composite
def hostile_files(draw: st.DrawFn) -> bytes:
    """What a config file may hold: TOML from a hostile mapping, that TOML damaged, text
    that is no TOML at all, bytes that are no UTF-8."""
    form = draw(st.sampled_from(["toml", "toml", "damaged", "text", "bytes", "encoded"]))
    if form == "bytes":
        return draw(st.binary(max_size=200))
    if form == "text":
        return draw(st.text(max_size=200)).encode()
    text = toml_dumps(draw(hostile_mappings()))
    if form == "encoded":
        return text.encode(draw(st.sampled_from(["utf-16", "latin-1", "cp1252", "utf-8-sig"])),
                           errors="replace")
    if form == "damaged":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(['"', "[", "]", "=", "\n", "\\", "{", "'''", "\x00"])
                    | st.text(max_size=3))
        return (text[:at] + junk + text[at + draw(st.integers(0, 3)):]).encode()
    return text.encode()


# ---- the loader, in-process, for volume -------------------------------------------------

PREFIXES = re.compile(r"^(unknown key |missing required key |\[\[(checks|baseline)\]\] name )?")


def assert_one_sentence_naming_a_key(error: ConfigError, path: Path, raw: dict[str, Any]
                                     ) -> None:
    message = error.message
    assert message.isprintable(), f"not one printable line: {message!r}"
    assert message.startswith(f"{path}: "), message
    assert len(message) < 600, f"an unreadable sentence ({len(message)} characters)"
    body = message.removeprefix(f"{path}: ")
    prefix = PREFIXES.match(body)
    assert prefix is not None
    if prefix.group(2):  # a duplicated [[checks]] or [[baseline]] name
        return
    key = body[prefix.end():]
    # A section or top-level key: bare as TOML writes it, or quoted when it is odd.
    named = [*config.Settings.model_fields, *(k if _BARE_KEY.fullmatch(k) else repr(k)[:20]
                                              for k in raw)]
    assert any(key.startswith(name) and (key[len(name):][:1] in ("", ".", "[", ":", " ")
                                         or not _BARE_KEY.fullmatch(name))
               for name in named), f"names no key of the config: {message!r}"


def changed(section: str, key: str, value: Any) -> dict[str, Any]:
    """VALID with one key of one section set to ``value``."""
    raw: dict[str, Any] = tomllib.loads(toml_dumps(VALID))
    raw[section][key] = value
    return raw


# Each of these once escaped as a traceback, an unreadable message, or an unusable setting.
FOUND_MAPPINGS = [
    changed("timeouts", "migrate", math.nan),  # ValueError in plan's ETA
    changed("timeouts", "migrate", math.inf),  # OverflowError in plan's ETA
    changed("monitor", "interval", math.inf),  # "every infs", a wait that never ends
    changed("target", "connect_timeout", 1e308),  # OverflowError connecting
    changed("timeouts", "backup", 10**400),  # OverflowError: int too large to convert
    changed("window", "length", "9" * 400 + "h"),  # infinite seconds
    changed("timeouts", "rollback", "x" * 100_000),  # a 100,000-character sentence
    changed("window", "\x1b[2J\n", 1),  # an unknown key that clears the screen
    changed("window", "", 1),  # "unknown key window."
    changed("banner", "on", {"a": 1}),  # "banner.on.str": pydantic's union member
    {**VALID, "checks": [{"name": "x", "kind": "a\nb" * 500}]},  # the tag quoted verbatim
    changed("window", "state_dir", "a\x00b"),  # ValueError: embedded null byte
    changed("target", "url_env", "A=B"),  # a name no environment can hold
    changed("staging", "url_env", "\x88\U0006e56a"),  # an unprintable refusal
    {**VALID, "baseline": {"min_difference_ms": math.inf}},  # a slowdown never counted
]


def with_found(test: Any, name: str, found: list[Any]) -> Any:
    for value in reversed(found):
        test = example(**{name: value})(test)
    return test


# What plan learns from the servers, as a server of the suite's version would say it.
SERVERS_SAID = plan.LookedUp(15, "pg_dump /usr/bin/pg_dump, pg_restore /usr/bin/pg_restore",
                             ["  pending     on production: nothing"],
                             ["  rollback    swap in the standby proven at the backup"],
                             ["  follow      off (wal_level is replica on production, not"
                              " logical)"],
                             ["  clinic      no errors, no warnings"])


def test_hostile_mappings_are_refused_with_a_sentence_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.from_mapping on 1,500 generated mappings, and plan's checks and text on those
    it accepts (with the servers' side given: plan asks real servers, none here): a
    ConfigError of one printable line naming a key, or settings that plan."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@127.0.0.1:1/shop")
    monkeypatch.setenv("DATABASE_URL_STAGING", "postgresql://app:pw@127.0.0.1:1/staging")
    path = tmp_path / "window.toml"
    tally: Counter[str] = Counter()

    @settings(FAST, max_examples=1500)
    @given(raw=hostile_mappings())
    @partial(with_found, name="raw", found=FOUND_MAPPINGS)
    def check(raw: dict[str, Any]) -> None:
        try:
            loaded = config.from_mapping(raw, path)
        except ConfigError as error:
            assert_one_sentence_naming_a_key(error, path, raw)
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        for phase in config.DEFAULT_TIMEOUTS:  # every deadline a number a clock can hold
            assert 0 < loaded.timeout(phase) <= config.MAX_DURATION_SECONDS, phase
        assert math.isfinite(loaded.monitor.interval)
        if loaded.state.backend == "local":  # s3 would reach for the network
            try:
                target, staging = plan.prepared(loaded)
                assert plan.plan_text(loaded, target, staging, SERVERS_SAID)
            except WindowError as error:
                assert error.message.isprintable(), error.message
                tally["plan refused"] += 1
            else:
                tally["planned"] += 1

    check()
    print(f"\nhostile mappings: {dict(tally)}")
    assert tally["refused"] >= 1200 and tally["planned"] >= 50, tally


def test_values_nested_past_pythons_recursion_limit_are_one_sentence(tmp_path: Path) -> None:
    """Too deep for hypothesis to print as an @example: quoting such a value in the message
    raised RecursionError, and tomllib raises it reading such a file."""
    path = tmp_path / "window.toml"
    for kind in ("list", "dict"):
        with pytest.raises(ConfigError, match=r"timeouts\.rollback: must be a duration") as caught:
            config.from_mapping(changed("timeouts", "rollback", nested(5000, 0, kind)), path)
        assert len(caught.value.message) < 200
        # Two checks named by the same deep value: the duplicate-name check compared them.
        raw = tomllib.loads(toml_dumps(VALID))
        raw["checks"] = [{**raw["checks"][0], "name": nested(5000, 0, kind)} for _ in "ab"]
        with pytest.raises(ConfigError, match=r"checks\[0\]\.name") as caught:
            config.from_mapping(raw, path)
        assert len(caught.value.message) < 200
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load(path)


FOUND_FILES = [
    b"x = " + b"9" * 400 + b"\n",  # an integer TOML reads and float() cannot hold
    "[window]\nconfirm_phrase = 'X'\n".encode("utf-16"),  # not UTF-8
    b"\xff\xfe[window]\n",
    b"[timeouts]\nmigrate = nan\n",
]


def test_hostile_files_load_or_fail_with_one_sentence(tmp_path: Path) -> None:
    """config.load on generated files: TOML from hostile mappings, damaged TOML, text, bytes
    in the wrong encoding. A ConfigError of one printable line naming the file, or settings."""
    path = tmp_path / "window.toml"
    tally: Counter[str] = Counter()

    @settings(FAST, max_examples=400)
    @given(data=hostile_files())
    @partial(with_found, name="data", found=FOUND_FILES)
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            config.load(path)
        except ConfigError as error:
            assert error.message.isprintable(), error.message
            assert error.message.startswith(f"{path}: "), error.message
            assert len(error.message) < 600, error.message
            tally["invalid TOML" if "invalid TOML" in error.message else
                  "unreadable" if "cannot be read" in error.message else "refused"] += 1
        else:
            tally["accepted"] += 1

    check()
    print(f"\nhostile files: {dict(tally)}")
    assert min(tally["invalid TOML"], tally["unreadable"], tally["refused"]) >= 20, tally


def test_a_config_too_large_to_be_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        config.load(Path("/dev/zero"))  # read() alone would never end
    (tmp_path / "window.toml").write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        config.load(tmp_path / "window.toml")


# ---- database URLs, in-process --------------------------------------------------------

# Wrapped in marks that no message holds by chance (a password "shop" is also the database).
passwords = st.builds("pw{}¤".format, st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24),
    st.sampled_from(["p@ss:w/rd", "p%40ss", "pa ss word", "pässwörd€", "s3cr3t:p@ss/w%rd",
                     "%%%", "@@@", "日本語パス", "😀😀😀", "a+b=c&d", "%ff%fe"]),
))


@st.composite
def database_urls(draw: st.DrawFn) -> tuple[str, str | None]:
    """A URL for the target variable, and the password it holds (None: it holds none)."""
    password = draw(passwords)
    quote = draw(st.sampled_from([urllib.parse.quote, urllib.parse.quote_plus,
                                  lambda text, safe="": text]))
    shape = draw(st.sampled_from(
        ["postgresql://app:{}@127.0.0.1:5432/shop", "postgres://app:{}@db.internal/shop?x=1",
         "postgresql://app:{}@/shop?host=/tmp", "host=127.0.0.1 password={} dbname=shop",
         "postgresql://app@h/shop?password={}", "postgresql://app:{}@h/shop?pgbouncer=true",
         "postgresql://app:{}@h:notaport/shop", "postgresql://app:{}@[::1/shop", "junk {}"]))
    return shape.format(quote(password, safe="")), password


def encodings(secret: str) -> set[str]:
    """Every form in which a password could be printed."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
            urllib.parse.quote(secret), json.dumps(secret)[1:-1]}


@example(url_and_password=("postgresql://app:%ff%fe@h/shop", "%ff%fe"))  # decodes to no UTF-8
@example(url_and_password=("postgresql://app:pw0@[::1/shop", "pw0"))  # ValueError: IPv6
@example(url_and_password=("postgresql://app:pw/¤@127.0.0.1/shop", "pw/¤"))  # host app, port pw
@settings(FAST, max_examples=600)
@given(url_and_password=database_urls())
def test_a_database_url_is_used_or_refused_without_showing_its_password(
        url_and_password: tuple[str, str]) -> None:
    """gates.database on generated URLs: a Db whose rendering hides the password, or a
    refusal of one printable sentence; neither, nor redact() of text quoting the URL in any
    encoding, shows the password."""
    url, password = url_and_password
    settings_ = config.from_mapping(VALID, Path("/srv/app/window.toml"))
    os.environ["HOSTILE_URL"] = url
    try:
        db = gates.database(settings_, "HOSTILE_URL", "target")
        shown = [str(db), repr(db)]
    except WindowError as error:
        assert error.message.isprintable(), error.message
        shown = [error.message]
    finally:
        del os.environ["HOSTILE_URL"]
    leaked = {form for form in encodings(password) if any(form in text for text in shown)}
    assert not leaked, f"{password!r} shown as {leaked}"
    if not url.startswith("junk"):  # where the password is, a log line quoting the URL
        leaked = {form for form in encodings(password) if form in redact.redact(f"{url}")}
        assert not leaked, f"{password!r} left in a redacted line as {leaked}"


def test_an_ordinary_url_whose_password_is_also_a_name_is_accepted() -> None:
    """The refusal of a URL libpq misreads must not catch a password that is also the user,
    host or database name (postgres:postgres@.../postgres)."""
    settings_ = config.from_mapping(VALID, Path("/srv/app/window.toml"))
    for url, shown in (
            ("postgresql://postgres:postgres@127.0.0.1:5432/postgres", "127.0.0.1:5432/postgres"),
            ("postgresql://app:p%2Fss@h/shop", "h:5432/shop"),
            ("postgresql://app:p?ss@h/shop", "h:5432/shop"),
            ("postgresql://h:5432/shop?application_name=me@laptop", "h:5432/shop")):
        os.environ["ORDINARY_URL"] = url
        try:
            assert str(gates.database(settings_, "ORDINARY_URL", "target")) == shown
        finally:
            del os.environ["ORDINARY_URL"]


# ---- the real CLI, as a subprocess, for a smaller sample ------------------------------

WINDOW = [sys.executable, "-m", "orchestrator"]
JUNK_URLS = [None, "", "   ", "junk", "pöstgres://ü:ß@/€", "postgresql://u:p%zz@h/db",
             "postgresql://h/db?bogus=1", "postgresql://app:%ff%fe@h/shop",
             "postgresql://app:pw@[::1/shop", "postgresql://app:pw/x@h/shop",
             "postgresql://u:p@h/db?pgbouncer=true"]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \w+")  # what `run` logs off a terminal


def is_json_object(line: str) -> bool:  # what `--json-logs` writes instead
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def window_env(url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "PG", "WINDOW_"))}
    env["NO_COLOR"] = "1"
    if url is not None:
        env["DATABASE_URL"] = env["DATABASE_URL_STAGING"] = url
    return env


def start(argv: list[str], folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*WINDOW, *argv], cwd=folder, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, errors="replace")


def answered(process: subprocess.Popen[str], codes: set[int], *, usage: bool = False) -> str:
    """The process ended with one of ``codes``, no traceback, and when it failed: one
    sentence starting `window: ` (after log lines), or with ``usage`` typer's usage error."""
    out, err = process.communicate(timeout=60)
    what = f"{process.args!r} exited {process.returncode}\n{err[-2000:]}"
    assert "Traceback" not in out + err, what
    assert process.returncode in codes, what
    lines = err.strip().splitlines()
    if process.returncode == 0:
        return err
    if usage and process.returncode == 2 and "Error" in err and "window: " not in err:
        assert re.search(r"─ Error ─|^Error:", err, re.M), what  # click's own, as typer boxes it
        return err
    assert lines and lines[-1].startswith("window: "), what
    assert all(LOG_LINE.match(line) or is_json_object(line) for line in lines[:-1]), what
    return err


@st.composite
def hostile_config_folders(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A config file (a third of them valid, so that `run` reaches its gates) and what
    DATABASE_URL holds (None: unset)."""
    data = draw(hostile_files()) if draw(st.integers(0, 2)) else toml_dumps(VALID).encode()
    return data, draw(st.sampled_from(JUNK_URLS))


def test_the_cli_answers_hostile_config_files_in_one_sentence(tmp_path: Path) -> None:
    """`window plan -c FILE` and `window run -c FILE --confirm x`, with DATABASE_URL unset or
    junk: plan exits 0 or 2, run 2 or 3 (a gate), each with one sentence, never a traceback."""
    folders = iter(range(10**6))
    tally: Counter[str] = Counter()

    @settings(FAST, max_examples=6, phases=SUBPROCESS)
    @given(case=hostile_config_folders())
    @example(case=(b"x = " + b"[" * 5000 + b"]" * 5000, None))  # RecursionError in tomllib
    @example(case=(toml_dumps(changed("timeouts", "migrate", math.nan)).encode(), "junk"))
    @example(case=(toml_dumps(changed("target", "url_env", "A\nB")).encode(), None))
    @example(case=(toml_dumps(VALID).encode(), "postgresql://app:pw@[::1/shop"))  # ValueError
    def check(case: tuple[bytes, str | None]) -> None:
        data, url = case
        folder = tmp_path / str(next(folders))
        folder.mkdir()
        (folder / "window.toml").write_bytes(data)
        plan_ = start(["plan", "-c", "window.toml"], folder, window_env(url))
        run = start(["run", "-c", "window.toml", "--confirm", "x"], folder, window_env(url))
        err = answered(plan_, {0, 2})
        assert plan_.returncode == 0 or len(err.strip().splitlines()) == 1, err
        answered(run, {2, 3})
        tally[f"plan {plan_.returncode}"] += 1
        tally[f"run {run.returncode}"] += 1

    check()
    print(f"\nhostile config files through the CLI (exit codes): {dict(tally)}")
    assert tally["plan 2"] >= 5 and tally["run 2"] >= 3 and tally["run 3"] >= 3, tally


OPTION_VALUES = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
    st.sampled_from(["", "-", "--", "0", "-1", "99999999999999999999999", "nan", "ü€😀",
                     "a\nb", "x" * 5000, "../../etc/passwd", "/dev/zero", "window.toml",
                     "SHOP-PROD-OK", "2026-12-01 02:00", "Europe/Athens", "md", "html",
                     "--confirm"]))
PATHS = st.sampled_from(["", ".", "/", "/dev/null", "/dev/zero", "no/such.toml", "window.toml",
                         "x" * 300, "ü€😀.toml", "a\nb.toml", "-", "/proc/self/environ",
                         "window.toml/x", "~/window.toml"])
SKIPPED_COMMANDS = {"init", "demo", "fleet"}  # they write files, start a cluster, need a file


def cli_options() -> dict[str, list[tuple[str, bool]]]:
    """Each command's options as typer built them: (name, is_flag); "" for an argument."""
    import typer  # noqa: PLC0415

    from orchestrator.cli import app  # noqa: PLC0415

    commands = typer.main.get_command(app.app).commands  # type: ignore[attr-defined]
    return {name: [(param.opts[0] if param.param_type_name == "option" else "",
                    bool(getattr(param, "is_flag", False))) for param in command.params]
            for name, command in commands.items() if name not in SKIPPED_COMMANDS}


OPTIONS = cli_options()


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command with its own options holding hostile values; now and then an option it does
    not know, or a stray argument."""
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    for _ in range(draw(st.integers(0, 3))):
        name, flag = draw(st.sampled_from(OPTIONS[command] or [("--unknown", True)]))
        odd = draw(st.integers(0, 7))
        if odd == 0:
            argv.append(draw(st.sampled_from(["--", "-"])) + draw(st.text(max_size=8)))
        elif odd == 1 or not name:
            argv.append(draw(OPTION_VALUES))
        elif flag:
            argv.append(name)
        else:
            argv += [name, draw(PATHS if name == "--config" else OPTION_VALUES)]
    return argv


def test_the_cli_answers_hostile_arguments_in_one_sentence(tmp_path: Path) -> None:
    """Random commands with hostile option values, paths, unknown options and stray
    arguments, against a valid project with an empty journal: exit 0, 2 or 3, with one
    sentence or typer's usage error, never a traceback."""
    from orchestrator.engine.journal import Journal  # noqa: PLC0415

    raw = tomllib.loads(toml_dumps(VALID))
    raw["migrate"] = {"command": "true"}  # no migration tool: nothing reads a database
    (tmp_path / "window.toml").write_text(toml_dumps(raw))
    Journal.open(tmp_path / ".window").close()  # so that history and report read one
    tally: Counter[str] = Counter()

    @settings(FAST, max_examples=8, phases=SUBPROCESS)
    @given(batch=st.lists(command_lines(), min_size=2, max_size=2))
    @example(batch=[["history", "--limit", "99999999999999999999999"],  # OverflowError
                    ["plan", "-c", "a\nb\x1b[2J.toml"]])  # a path that clears the screen
    @example(batch=[["run", "--colour"], ["plan", "-c"]])
    def check(batch: list[list[str]]) -> None:
        started = [start(argv, tmp_path, window_env()) for argv in batch]  # side by side
        for process in started:
            err = answered(process, {0, 2, 3}, usage=True)
            tally["usage error" if "window: " not in err and "Error" in err else
                  "window: ..." if "window: " in err else "ok"] += 1

    check()
    print(f"\nhostile command lines: {dict(tally)}")
    assert min(tally["usage error"], tally["window: ..."], tally["ok"]) >= 2, tally
