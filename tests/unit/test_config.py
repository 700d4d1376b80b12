from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.errors import ConfigError
from orchestrator.redact import redact

MINIMAL: dict[str, Any] = {
    "window": {"confirm_phrase": "DIXIS-PROD-OK"},
    "banner": {"on": "up", "off": "down"},
    "migrate": {"command": "pnpm prisma migrate deploy"},
}


def load(**sections: Any) -> config.Settings:
    return config.from_mapping({**MINIMAL, **sections}, Path("/srv/app/window.toml"))


@pytest.mark.parametrize(("value", "seconds"),
                         [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0),
                          ("1.5m", 90.0), ("250ms", 0.25)])
def test_durations(value: object, seconds: float) -> None:
    assert config.parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -5, "0s", "soon", "10 minutes", True, None])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="must be"):
        config.parse_duration(value)


def test_defaults_follow_the_runbook_timeline() -> None:
    settings = load()
    assert {p: settings.timeout(p) for p in ("staging_dry_run", "backup", "migrate",
                                             "post_check", "rollback")} == {
        "staging_dry_run": 900, "backup": 600, "migrate": 300, "post_check": 300,
        "rollback": 600}
    assert settings.target.url_env == "DATABASE_URL"
    assert settings.state_dir == Path("/srv/app/.window")
    assert settings.path("backups") == Path("/srv/app/backups")


def test_checks_are_typed_by_kind() -> None:
    settings = load(checks=[
        {"name": "health", "kind": "http", "url": "http://127.0.0.1/healthz"},
        {"name": "rows", "kind": "sql", "query": "SELECT true", "timeout": "5s"},
        {"name": "status", "kind": "command", "command": ["true"], "expect_output": "ok"},
    ])
    assert [type(c).__name__ for c in settings.checks] == ["HttpCheck", "SqlCheck",
                                                           "CommandCheck"]
    assert settings.checks[0].timeout == 30
    assert settings.checks[1].timeout == 5


@pytest.mark.parametrize(("sections", "message"), [
    ({"colour": "red"}, "unknown key colour"),
    ({"window": {"confirm_phrase": "X", "colour": 1}}, "unknown key window.colour"),
    ({"window": {}}, "missing required key window.confirm_phrase"),
    ({"window": {"confirm_phrase": "  "}}, "window.confirm_phrase: must not be empty"),
    ({"timeouts": {"migrate": -5}}, "timeouts.migrate: must be positive"),
    ({"timeouts": {"migrate": "5 minutes"}}, "timeouts.migrate: must be a duration"),
    ({"backup": {"jobs": 0}}, "backup.jobs"),
    ({"checks": [{"name": "h", "kind": "http"}]}, "missing required key checks[0].url"),
    ({"checks": [{"name": "h", "kind": "smtp"}]}, "checks[0]"),
    ({"checks": [{"name": "a", "kind": "sql", "query": "x"},
                 {"name": "a", "kind": "sql", "query": "y"}]}, "'a' is used twice"),
])
def test_errors_name_the_key(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"window\.toml") as caught:
        load(**sections)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "window.toml"
    path.write_text('[window]\nconfirm_phrase = "X\n')
    with pytest.raises(ConfigError, match="line 2"):
        config.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "window.toml")


ROOT = Path(__file__).resolve().parents[2]


def test_annotated_example_loads() -> None:
    settings = config.load(ROOT / "config" / "window.example.toml")
    assert settings.window.confirm_phrase == "DIXIS-PROD-OK"
    assert [c.kind for c in settings.checks] == ["http", "sql", "log", "command"]
    assert settings.timeout("migrate") == 300


def test_defaults_file_matches_the_code() -> None:
    documented = tomllib.loads((ROOT / "config" / "defaults.toml").read_text())["timeouts"]
    assert documented == config.DEFAULT_TIMEOUTS
    assert config.TimeoutsSection().model_dump() == config.DEFAULT_TIMEOUTS


def test_http_check_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match=r"checks\[0\]\.url: must be an http"):
        load(checks=[{"name": "h", "kind": "http", "url": "localhost/healthz"}])


def test_http_check_token_is_registered_for_redaction() -> None:
    load(checks=[{"name": "h", "kind": "http", "url": "https://ops:T0KEN-xyz@127.0.0.1:1/h"}])
    assert "T0KEN-xyz" not in redact("nonnumeric port: 'T0KEN-xyz@127.0.0.1'")


def test_checks_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="checks"):
        load(checks=1)


def test_log_and_http_checks_validate_their_patterns() -> None:
    with pytest.raises(ConfigError, match=r"checks\[0\]\.error_pattern: is not a valid regular"):
        load(checks=[{"name": "l", "kind": "log", "path": "x.log", "error_pattern": "(["}])
    with pytest.raises(ConfigError, match=r"checks\[0\]\.expect_body"):
        load(checks=[{"name": "h", "kind": "http", "url": "http://127.0.0.1/",
                      "expect_body": "*"}])
    settings = load(checks=[{"name": "h", "kind": "http", "url": "http://127.0.0.1/",
                             "expect_json": {"checks.db": "ok"},
                             "headers": {"Authorization": "Bearer s3cr3t-t0ken"}}])
    assert settings.checks[0].expect_json == {"checks.db": "ok"}  # type: ignore[union-attr]
    assert redact("sent Bearer s3cr3t-t0ken") == "sent Bearer ***"


def test_skip_checks_names_builtin_checks_only() -> None:
    assert load(window={"confirm_phrase": "X", "skip_checks": ["no-invalid-indexes"]})
    with pytest.raises(ConfigError, match="'no-such' is not a built-in check"):
        load(window={"confirm_phrase": "X", "skip_checks": ["no-such"]})


def test_the_migration_tool_state_check_runs_only_with_a_tool() -> None:
    assert "migration-tool-state" not in load().builtin_checks
    with_tool = load(migrate={"command": "x", "tool": "prisma", "files": "prisma/migrations"})
    assert with_tool.builtin_checks == list(config.BUILTIN_CHECKS)
    skipped = load(window={"confirm_phrase": "X", "skip_checks": ["migration-tool-state"]},
                   migrate={"command": "x", "tool": "alembic"})
    assert "migration-tool-state" not in skipped.builtin_checks
    plain = load(migrate={"command": "x", "files": "sql"})  # plain SQL files: linted only
    assert "migration-tool-state" not in plain.builtin_checks
    with pytest.raises(ConfigError, match=r"migrate\.tool"):
        load(migrate={"command": "x", "tool": "liquibase"})


def test_baseline_takes_both_forms() -> None:
    entries = [{"name": "orders", "query": "SELECT 1"}]
    short = load(baseline=entries)
    full = load(baseline={"queries": entries, "max_slowdown": 3, "on_slowdown": "warn",
                          "from_pg_stat_statements": 10})
    assert short.baseline.queries == full.baseline.queries
    assert (short.baseline.max_slowdown, short.baseline.on_slowdown) == (2.0, "fail")
    assert (full.baseline.max_slowdown, full.baseline.on_slowdown) == (3.0, "warn")
    with pytest.raises(ConfigError, match=r"\[\[baseline\]\] name 'orders' is used twice"):
        load(baseline=entries * 2)
    with pytest.raises(ConfigError, match=r"baseline\.max_slowdown"):
        load(baseline={"max_slowdown": 1})
