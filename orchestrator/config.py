"""Read and validate window.toml into typed settings.

Validation is pydantic's; this module only turns its first complaint into one sentence
that names the file and the key, because that is all an engineer at 2 a.m. needs.
"""

from __future__ import annotations

import math
import re
import reprlib
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import ConfigError
from orchestrator.redact import redact, register, register_url

# The runbook's timeline, in seconds: staging 15 min, backup 10, migrate 5, checks 5, restore 10.
DEFAULT_TIMEOUTS: dict[str, float] = {
    "preflight": 120,
    "staging_dry_run": 900,
    "backup": 600,
    "banner_on": 120,
    "migrate": 300,
    "post_check": 300,
    "banner_off": 120,
    "rollback": 600,
    "rollback_banner_off": 120,
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# A week: longer is a typo, and past ~24 days PostgreSQL refuses it as a statement_timeout.
MAX_DURATION_SECONDS = 7 * 24 * 3600.0
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlevel = 2


def shown(value: object) -> str:
    """``repr`` cut short: a value quoted in an error stays one readable line, however long
    or deeply nested it is."""
    return _SHORT.repr(value)


def parse_duration(value: object) -> float:
    """Seconds from 90, 90.5, "90s", "10m" or "1h"; positive, at most a week, or a
    ValueError."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        else:
            seconds = math.nan
    except OverflowError:  # an integer past float's range
        seconds = math.inf
    if math.isnan(seconds):
        raise ValueError(f"must be a duration such as 90, \"90s\", \"10m\" or \"1h\","
                         f" not {shown(value)}")
    if seconds <= 0:
        raise ValueError(f"must be positive, not {shown(value)}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"must be at most a week (168h), not {shown(value)}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _secret_headers(value: dict[str, str]) -> dict[str, str]:
    for header in value.values():  # Authorization: Bearer ... must never be printed
        register(header.split(" ", 1)[-1])
    return value


SecretHeaders = Annotated[dict[str, str], AfterValidator(_secret_headers)]


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):  # what a shell can export
        raise ValueError("must name an environment variable, such as DATABASE_URL, not"
                         f" {shown(value)}")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]

Command = str | list[str]


def _checked_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, not {shown(redact(value))}")
    register_url(value)  # a token in the URL must never be printed
    return value


class Section(BaseModel):
    # No number in a config is infinite or NaN: each is a count, a share or a time.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WindowSection(Section):
    name: str = "window"
    confirm_phrase: str
    state_dir: str = ".window"
    require_git_repo: bool = True
    skip_checks: list[str] = []
    # The maintenance window's announced length; default: the forward phases' timeouts.
    length: Duration | None = None

    @field_validator("skip_checks")
    @classmethod
    def _known_builtins(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(BUILTIN_CHECKS))
        if unknown:
            raise ValueError(f"{shown(unknown[0])} is not a built-in check"
                             f" ({', '.join(BUILTIN_CHECKS)})")
        return value

    @field_validator("confirm_phrase")
    @classmethod
    def _phrase_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class TargetSection(Section):
    url_env: EnvName = "DATABASE_URL"
    maintenance_db: str = "postgres"
    connect_timeout: Duration = 60.0


S3_URI = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?"
TARGET_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


class StateSection(Section):
    """Where the journal lives. ``local``: the state folder alone. ``s3``: the journal, a lease
    naming the one runner that drives the window, the backups and the reports live under
    ``uri``; the state folder is only a cache, so another machine can resume or abort."""

    backend: Literal["local", "s3"] = "local"
    uri: str | None = None
    # A runner renews its lease every lease_ttl / 6; a lease not renewed for lease_ttl is
    # expired and `window resume` on any machine may take the window over.
    lease_ttl: Duration = Field(default=30.0, ge=3.0, le=3600.0)

    @field_validator("uri")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(S3_URI, value):
            raise ValueError(f"must look like s3://bucket/prefix, not {shown(value)}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _s3_needs_a_uri(self) -> StateSection:
        if self.backend == "s3" and not self.uri:
            raise ValueError('backend = "s3" needs uri = "s3://bucket/prefix"')
        return self


class StagingSection(Section):
    url_env: EnvName = "DATABASE_URL_STAGING"
    # "url": rehearse on the staging database as it is; "clone": on a fresh copy of
    # production restored into a scratch database (on staging's server, or with
    # clone_on = "production" beside production), dropped afterwards.
    mode: Literal["url", "clone"] = "url"
    clone_on: Literal["staging", "production"] = "staging"
    # Refuse before the backup when the rehearsed migration took more than this share of
    # the migrate timeout (or the predicted restore exceeds the rollback timeout).
    max_migrate_share: float = Field(default=0.5, gt=0, le=1)
    # A successful rehearsal of the same migration files this recent is reused by `run`.
    max_age: Duration = 86400.0
    # Skipping the rehearsal takes this AND `window run --skip-staging`.
    skip: bool = False


class RdsSection(Section):
    instance_id: str


class BackupSection(Section):
    # "pg_dump": an archive proven by restore; "rds_snapshot": an RDS snapshot of the instance
    # (rollback restores it to a new instance and says what to switch).
    method: Literal["pg_dump", "rds_snapshot"] = "pg_dump"
    dir: str = "backups"
    jobs: int = Field(default=2, ge=1, le=64)
    # pg_dump --compress; "auto" is lz4 where pg_dump is 16+, else gzip level 1 (far faster
    # than the default 6).
    compress: str = "auto"
    # "restore": restore into a standby copy and compare checksums (the copy then makes
    # rollback a rename); "list": only read the archive's table of contents (no room for a copy).
    verify: Literal["restore", "list"] = "restore"
    on_write_gap: Literal["warn", "stop"] = "warn"
    # "after_banner" raises the banner before the backup: no write is lost by a rollback, but
    # users wait through the backup and its proof too.
    when: Literal["before_banner", "after_banner"] = "before_banner"
    # The server's write statistics lag behind commits by about a second.
    write_stats_settle: Duration = 1.0
    # Also keep the archive and its manifest off the machine (verified after upload).
    s3_uri: str | None = None
    rds: RdsSection | None = None

    @field_validator("s3_uri")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(S3_URI, value):
            raise ValueError(f"must look like s3://bucket/prefix, not {shown(value)}")
        return value

    @model_validator(mode="after")
    def _rds_needs_an_instance(self) -> BackupSection:
        if self.method == "rds_snapshot" and self.rds is None:
            raise ValueError('method = "rds_snapshot" needs [backup.rds] instance_id')
        return self


BANNER_KEYS: dict[str, tuple[str, ...]] = {  # the keys each kind of banner reads
    "command": ("on", "off"),
    "file": ("path", "message", "template"),
    "http": ("url", "on_url", "off_url", "method", "headers", "on_body", "off_body",
             "expect_status", "timeout"),
}


class BannerSection(Section):
    """How users are told: the user's own commands, a maintenance page written to a file the
    web server looks for, or a call to an HTTP endpoint (a CDN, a feature flag service)."""

    kind: Literal["command", "file", "http"] = "command"
    on: Command | None = None
    off: Command | None = None
    path: str | None = None  # file: relative to the config's folder
    message: str = ("We are upgrading our database. The site will be back shortly;"
                    " thank you for your patience.")
    template: str | None = None  # file: HTML with $message and $ends_at, else a built-in page
    url: str | None = None  # http: one endpoint, told on from off by on_body / off_body
    on_url: str | None = None
    off_url: str | None = None
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    headers: SecretHeaders = {}
    on_body: Any = None  # JSON, sent as the request's body
    off_body: Any = None
    expect_status: int | None = None  # default: any 2xx
    timeout: Duration = 10.0  # each request; the phase's deadline bounds the retries

    @field_validator("url", "on_url", "off_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else _checked_url(value)

    @model_validator(mode="after")
    def _kind_has_its_keys(self) -> BannerSection:
        foreign = sorted(self.model_fields_set - {"kind", *BANNER_KEYS[self.kind]})
        if foreign:
            raise ValueError(f"{foreign[0]} is not used by kind = {self.kind!r}")
        if self.kind == "command" and (self.on is None or self.off is None):
            raise ValueError(f'kind = "command" needs {"on" if self.on is None else "off"}')
        if self.kind == "file" and not self.path:
            raise ValueError('kind = "file" needs path, the page the web server looks for')
        if self.kind == "http":
            self._http_has_urls()
        return self

    def _http_has_urls(self) -> None:
        if not (self.url or (self.on_url and self.off_url)):
            raise ValueError('kind = "http" needs url, or both on_url and off_url')
        if not (self.on_url and self.off_url) and (self.on_body is None
                                                   or self.off_body is None):
            raise ValueError('kind = "http" with one url needs on_body and off_body'
                             " to tell on from off")

    def endpoint(self, which: Literal["on", "off"]) -> str:
        """The http banner's URL for putting it up (``on``) or taking it down."""
        specific = self.on_url if which == "on" else self.off_url
        return specific or self.url or ""


MIGRATION_TOOLS = ("prisma", "alembic", "flyway", "none")


class MigrateSection(Section):
    command: Command
    workdir: str | None = None
    # Handed to the command's libpq sessions through PGOPTIONS: a migration waiting on a lock
    # fails fast instead of queueing every query behind it; no statement outlives the phase
    # (statement_timeout defaults to the phase's remaining time).
    lock_timeout: Duration = 5.0
    statement_timeout: Duration | None = None
    # The tool whose own table (_prisma_migrations, alembic_version, flyway_schema_history)
    # tells applied, failed and, against ``files``, pending migrations.
    tool: Literal["prisma", "alembic", "flyway", "none"] = "none"
    files: str | None = None  # prisma/migrations, alembic/versions, sql/ ...
    table: str | None = None  # the tool's table when not the default (schema.table allowed)
    # Before the migration: wait for application sessions to finish what they are doing.
    drain_timeout: Duration = 30.0
    drain_idle: bool = False  # also wait for idle sessions (a pool's) to disconnect
    drain_ignore: list[str] = []  # application_name patterns (fnmatch) never waited for
    terminate_idle_in_transaction: bool = False

    @model_validator(mode="after")
    def _files_need_a_tool(self) -> MigrateSection:
        if self.files is not None and self.tool == "none":
            raise ValueError('files needs tool = "prisma", "alembic" or "flyway"')
        return self


class MonitorSection(Section):
    """Samples of pg_stat_activity and pg_locks while production is migrated or restored."""

    enabled: bool = True
    interval: Annotated[Duration, Field(ge=0.5)] = 2.0  # each sample costs production a little


class LintSection(Section):
    """The migration clinic: pending migration files linted before the rehearsal. Its own
    error rules always stop the window; ``errors`` turns named warnings (squawk's rules, bare
    or as ``squawk:<rule>``, or ``missing-if-not-exists``) into errors too."""

    enabled: bool = True  # false: `window run` skips the clinic (`window lint` still works)
    squawk: bool = True
    squawk_exclude: list[str] = []  # squawk rules never reported (squawk --exclude)
    errors: list[str] = []
    # The clinic's own error rules reported as warnings here (a rule that misreads a history
    # it cannot understand); the rest of the clinic keeps guarding.
    warnings: list[str] = []
    idempotency: bool = True  # warn on CREATE TABLE / CREATE INDEX / ADD COLUMN re-run unsafely


class BaselineQuery(Section):
    name: str
    query: str
    max_slowdown: float | None = Field(default=None, gt=1.0)
    on_slowdown: Literal["fail", "warn"] | None = None


def _baseline_entries(value: object) -> object:
    # [[baseline]] entries alone are the short form of [baseline] queries = [...].
    return {"queries": value} if isinstance(value, list) else value


class BaselineSection(Section):
    """Queries timed (median of ``runs``) before the banner goes up and again in post_check;
    slower than ``max_slowdown`` times fails the check, or warns. Differences under
    ``min_difference_ms`` are noise, never a slowdown."""

    queries: list[BaselineQuery] = []
    runs: int = Field(default=5, ge=1, le=100)
    max_slowdown: float = Field(default=2.0, gt=1.0)
    on_slowdown: Literal["fail", "warn"] = "fail"
    min_difference_ms: float = Field(default=5.0, ge=0)
    # The top statements of pg_stat_statements by total time, compared by planner cost.
    from_pg_stat_statements: int | None = Field(default=None, ge=1, le=100)


class TimeoutsSection(Section):
    preflight: Duration = DEFAULT_TIMEOUTS["preflight"]
    staging_dry_run: Duration = DEFAULT_TIMEOUTS["staging_dry_run"]
    backup: Duration = DEFAULT_TIMEOUTS["backup"]
    banner_on: Duration = DEFAULT_TIMEOUTS["banner_on"]
    migrate: Duration = DEFAULT_TIMEOUTS["migrate"]
    post_check: Duration = DEFAULT_TIMEOUTS["post_check"]
    banner_off: Duration = DEFAULT_TIMEOUTS["banner_off"]
    rollback: Duration = DEFAULT_TIMEOUTS["rollback"]
    rollback_banner_off: Duration = DEFAULT_TIMEOUTS["rollback_banner_off"]


class CheckBase(Section):
    name: str
    timeout: Duration = 30.0


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression ({exc})") from exc
    return value


Regex = Annotated[str, AfterValidator(_regex)]



class HttpCheck(CheckBase):
    """Retried with backoff until its timeout: an application needs seconds after a
    migration. Passes on ``expect_status`` AND, when given, a JSON body holding
    ``expect_json`` (dotted paths: ``"checks.db" = "ok"``) AND a body matching
    ``expect_body``: a 200 saying the database is down is a failure."""

    kind: Literal["http"]
    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: int = 200
    expect_json: dict[str, Any] | None = None
    expect_body: Regex | None = None
    headers: SecretHeaders = {}

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _checked_url(value)


class SqlCheck(CheckBase):
    kind: Literal["sql"]
    query: str


class CommandCheck(CheckBase):
    kind: Literal["command"]
    command: Command
    expect_output: str | None = None


class LogCheck(CheckBase):
    """Passes when no line matching ``error_pattern`` was appended, since the window
    started, to any file matching ``path`` (a glob, relative to the config's folder)."""

    kind: Literal["log"]
    path: str
    error_pattern: Regex


Check = Annotated[HttpCheck | SqlCheck | CommandCheck | LogCheck, Field(discriminator="kind")]
CHECK_KINDS = ("http", "sql", "command", "log")
# Checks every window runs after its own, unless [window] skip_checks names them.
BUILTIN_CHECKS = ("no-invalid-indexes", "no-migrate-sessions", "migration-tool-state")


class ContactsSection(Section):
    """Who is called when the window goes wrong; in every failure notification and report.
    Checked by ``plan`` and ``run`` (see ``unfilled_contacts``), not at load."""

    on_call: str = ""
    backup: str = ""
    db_support: str = ""
    decision_maker: str = ""

    def lines(self) -> list[str]:
        return [f"{key}: {value}" for key, value in self.model_dump().items()]


# "[FILL IN]", "<name>", "TODO", "TBD", "xxx": a template nobody filled in.
_PLACEHOLDER = re.compile(r"\[[^\]]*\]|<[^>]*>|\b(todo|tbd|fixme|fill in|changeme)\b|xxx", re.I)


def unfilled_contacts(contacts: ContactsSection) -> list[str]:
    """The [contacts] keys still empty or holding a placeholder."""
    return [key for key, value in contacts.model_dump().items()
            if not value.strip() or _PLACEHOLDER.search(value)]


def require_contacts(contacts: ContactsSection) -> None:
    """``plan`` and ``run`` refuse a window with nobody to call when it goes wrong."""
    if unfilled := unfilled_contacts(contacts):
        key = unfilled[0]
        value = getattr(contacts, key).strip()
        what = f"still a placeholder ({shown(value)})" if value else "empty"
        raise ConfigError(f"[contacts] {key} is {what}: name who to call before a window"
                          " runs (on_call, backup, db_support, decision_maker).")


class NotifySection(Section):
    # The variable holding apprise URLs (json://, mailto://, slack://, ...), space or comma
    # separated: they carry tokens, so never the config file itself.
    urls_env: EnvName | None = None


class CommunicationSection(Section):
    """string.Template texts: $window, $start, $end, $duration, $tz (notice); $state,
    $contacts, $next (during and after)."""

    notice: str = ("Planned maintenance of $window on $start ($tz), expected to take"
                   " about $duration (until about $end). The site shows a maintenance page"
                   " meanwhile; no action is needed from you.")
    during: str = "Maintenance of $window: $state."
    after: str = "Maintenance of $window ended: $state.\n$contacts\n$next"


class Settings(Section):
    window: WindowSection
    state: StateSection = StateSection()
    target: TargetSection = TargetSection()
    staging: StagingSection = StagingSection()
    backup: BackupSection = BackupSection()
    banner: BannerSection
    migrate: MigrateSection
    timeouts: TimeoutsSection = TimeoutsSection()
    checks: list[Check] = []
    baseline: Annotated[BaselineSection, BeforeValidator(_baseline_entries)] = \
        BaselineSection()
    monitor: MonitorSection = MonitorSection()
    lint: LintSection = LintSection()
    contacts: ContactsSection = ContactsSection()
    notify: NotifySection = NotifySection()
    communication: CommunicationSection = CommunicationSection()
    config_dir: Path = Field(default=Path(), exclude=True)

    def path(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        return (self.config_dir / relative).resolve()

    @property
    def state_dir(self) -> Path:
        return self.path(self.window.state_dir)

    @property
    def backup_s3_uri(self) -> str | None:
        """Where the archives go off the machine: ``[backup] s3_uri``, else, with the S3 state
        backend, beside the journal (a window resumed elsewhere can then roll back)."""
        if self.backup.s3_uri or self.state.backend != "s3":
            return self.backup.s3_uri
        return f"{self.state.uri}/backups"

    def for_target(self, name: str) -> Settings:
        """These settings with the state scoped to one target of a fleet: its own journal,
        lock and lease (``<state_dir>/targets/<name>``, ``<uri>/targets/<name>``)."""
        if not re.fullmatch(TARGET_NAME, name):
            raise ConfigError(f"{shown(name)} is not a target name: letters, digits, '_', '.' and"
                              " '-', starting with a letter or digit, at most 63.")
        scoped = f"targets/{name}"
        uri = f"{self.state.uri}/{scoped}" if self.state.uri else None
        return self.model_copy(update={
            "window": self.window.model_copy(
                update={"state_dir": str(Path(self.window.state_dir) / scoped)}),
            "state": self.state.model_copy(update={"uri": uri}),
            "backup": self.backup.model_copy(
                update={"dir": str(Path(self.backup.dir) / scoped)}),
        })

    def timeout(self, phase: str) -> float:
        return float(getattr(self.timeouts, phase))

    @property
    def builtin_checks(self) -> list[str]:
        """The built-in checks this window runs: all but those skipped, and the migration
        tool's state only when there is a tool to ask."""
        return [name for name in BUILTIN_CHECKS if name not in self.window.skip_checks
                and (name != "migration-tool-state" or self.migrate.tool != "none")]


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kilobytes; /dev/zero is not one


def load(path: Path) -> Settings:
    """Settings from a TOML file, or a ConfigError with one sentence naming the fault."""
    return from_mapping(read_toml(path, "config file (pass --config PATH)"), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a mapping, or a ConfigError with one sentence naming the file."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config.")
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {what}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}.") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply.") from exc


def from_mapping(raw: dict[str, Any], path: Path) -> Settings:
    baseline = raw.get("baseline")
    for where, entries in (("[[checks]]", raw.get("checks")),
                           ("[[baseline]]", baseline.get("queries")
                            if isinstance(baseline, dict) else baseline)):
        names = [e.get("name") for e in entries if isinstance(e, dict)] \
            if isinstance(entries, list) else []
        duplicated = sorted({str(n) for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"{path}: {where} name {shown(duplicated[0])} is used twice.")
    if nul := _holding_nul(raw):  # no path, command or environment can hold one
        raise ConfigError(f"{path}: {nul}: must not contain a NUL character.")
    given = {**raw, "config_dir": path.resolve().parent}
    try:
        return Settings.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc, given)}.") from exc


def _holding_nul(raw: dict[str, Any]) -> str | None:
    """The first key whose name or value (at any depth) holds a NUL character; walked with a
    stack, not recursion, so no nesting is too deep for it."""
    stack: list[tuple[tuple[int | str, ...], object]] = [((), raw)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            return _dotted(loc) or "a key"
        items = value.items() if isinstance(value, dict) else \
            enumerate(value) if isinstance(value, list) else ()
        for key, item in reversed(list(items)):
            if isinstance(key, str) and "\x00" in key:
                return _dotted((*loc, key))
            stack.append(((*loc, key), item))
    return None


def describe(exc: ValidationError, raw: object = None) -> str:
    """The first validation problem as 'key: what is wrong', on one printable line. With the
    ``raw`` input, the key is exactly the path the user wrote."""
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    key = _dotted(error["loc"], raw, missing=kind == "missing")
    if kind == "extra_forbidden":
        return f"unknown key {key}"
    if kind == "missing":
        return f"missing required key {key}"
    if kind == "union_tag_invalid":  # pydantic's message quotes the user's value verbatim
        context = error.get("ctx", {})
        return (f"{key}.{context.get('discriminator', 'kind').strip(chr(39))}: must be one of"
                f" {context.get('expected_tags', '')}, not {shown(context.get('tag'))}")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {_printable(message)}"


def _printable(text: str, limit: int = 300) -> str:
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(part: str) -> str:
    """A key as written in TOML: bare, or quoted (and escaped, and cut short) when not."""
    return part if _BARE_KEY.fullmatch(part) else shown(part)


def _dotted(loc: tuple[int | str, ...], raw: object = None, *, missing: bool = False) -> str:
    parts: list[str] = []
    node = raw
    for index, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        if raw is not None:
            if not (isinstance(node, dict)
                    and (part in node or (index == len(loc) - 1 and missing))):
                continue  # pydantic names the union member or validator it tried
            node = node.get(part)
        elif index and isinstance(loc[index - 1], int) and part in CHECK_KINDS:
            continue  # pydantic names the union member it tried; the user never wrote that
        parts.append(f".{_key(part)}" if parts else _key(part))
    return "".join(parts)
