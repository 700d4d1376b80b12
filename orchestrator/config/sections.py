"""The tables of window.toml, one model each: ``[window]``, ``[target]``, ``[state]``,
``[staging]``, ``[backup]``, ``[banner]``, ``[migrate]``, ``[timeouts]``, ``[contacts]``
and the rest."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from orchestrator.config.checks import BUILTIN_CHECKS
from orchestrator.config.values import (
    DEFAULT_TIMEOUTS,
    Command,
    Duration,
    EnvName,
    SecretHeaders,
    Section,
    checked_url,
    shown,
)
from orchestrator.errors import ConfigError


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

    @property
    def needs_url(self) -> bool:
        """Whether a staging database is named: not for a copy restored beside production
        (``mode = "clone"``, ``clone_on = "production"``), which never touches staging."""
        return not (self.mode == "clone" and self.clone_on == "production")

    def shown(self, address: str) -> str:
        """Staging as plan, status and the report name it: its address, or what stands in."""
        return address if self.needs_url else \
            "none: rehearsed on a copy of production, restored beside it"


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
    # "swap": rename a copy into production's place (needs CREATEDB); "in_place": where the
    # role may not create databases, keep production as an archive, empty it and restore the
    # archive into it (slower: the banner stays up through a dump and a restore).
    rollback: Literal["swap", "in_place"] = "swap"
    # "after_banner" raises the banner before the backup: no write is lost by a rollback, but
    # users wait through the backup and its proof too.
    when: Literal["before_banner", "after_banner"] = "before_banner"
    # "auto": where production runs wal_level = logical and this role may replicate, the
    # standby follows production (logical replication) until the banner is up, so a rollback
    # loses no write; "off": the standby holds the backup's snapshot (the write gap reported).
    follow: Literal["auto", "off"] = "auto"
    # How long the standby may take, behind the banner, to apply what production committed
    # since the snapshot; past it the window goes on as with follow = "off".
    follow_catch_up: Duration = 30.0
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

    @property
    def creates_databases(self) -> bool:
        """Whether the window creates databases (a proof standby, a copy to swap in): a role
        without CREATEDB needs rollback = "in_place" and verify = "list"."""
        return self.verify == "restore" or self.rollback == "swap"

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
        return None if value is None else checked_url(value)

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
    # In the ``options`` of the URL the command is handed (Prisma's engine reads only that)
    # and in PGOPTIONS: a migration waiting on a lock
    # fails fast instead of queueing every query behind it; no statement outlives the phase
    # (statement_timeout defaults to the phase's remaining time).
    lock_timeout: Duration = 5.0
    statement_timeout: Duration | None = None
    # The tool whose own table (_prisma_migrations, alembic_version, flyway_schema_history)
    # tells applied, failed and, against ``files``, pending migrations.
    tool: Literal["prisma", "alembic", "flyway", "none"] = "none"
    # prisma/migrations, alembic/versions, sql/ ...; with tool = "none", a folder of plain SQL
    # files, in name order: linted, and fingerprinted for the rehearsal's reuse.
    files: str | None = None
    table: str | None = None  # the tool's table when not the default (schema.table allowed)
    # Before the migration: wait for application sessions to finish what they are doing.
    drain_timeout: Duration = 30.0
    drain_idle: bool = False  # also wait for idle sessions (a pool's) to disconnect
    drain_ignore: list[str] = []  # application_name patterns (fnmatch) never waited for
    terminate_idle_in_transaction: bool = False



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
    # it cannot understand, or "cluster-level" for a migration meant to create a role); the
    # rest of the clinic keeps guarding.
    warnings: list[str] = []
    idempotency: bool = True  # warn on CREATE TABLE / CREATE INDEX / ADD COLUMN re-run unsafely


class BaselineQuery(Section):
    name: str
    query: str
    max_slowdown: float | None = Field(default=None, gt=1.0)
    on_slowdown: Literal["fail", "warn"] | None = None


def baseline_entries(value: object) -> object:
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
