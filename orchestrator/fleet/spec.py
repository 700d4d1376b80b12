"""What a fleet is: ``fleet.toml`` (the targets, or a catalog query that lists them, and the
one ``window.toml`` they share), the targets with their URLs, the rule for their rehearsals,
and the waves they run in. Nothing here reads or writes the fleet's state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator import config
from orchestrator.config import TARGET_NAME, Duration, Settings
from orchestrator.errors import ConfigError, GateRefused, UsageError
from orchestrator.postgres import pg
from orchestrator.redact import redact, register_url


def _target_name(value: str) -> str:
    if not re.fullmatch(TARGET_NAME, value):
        raise ValueError(f"{value!r} is not a target name: letters, digits, '_', '.' and '-',"
                         " starting with a letter or digit, at most 63")
    return value


TargetName = Annotated[str, AfterValidator(_target_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetEntry(_Section):
    name: TargetName
    url_env: str  # the variable holding this target's URL, never the URL
    staging_url_env: str | None = None  # its own staging; default: the config's [staging]


class CatalogSection(_Section):
    """A database that lists the fleet: ``query`` returns (name, url) or (name, url,
    staging_url) rows, in the order the fleet should run."""

    url_env: str
    query: str
    connect_timeout: Duration = 10.0
    statement_timeout: Duration = 30.0


class EngineSection(_Section):
    """What places the targets' windows: the built-in runner (child processes on this
    machine), or Celery workers fed through a broker (``window fleet worker``)."""

    kind: Literal["builtin", "celery"] = "builtin"
    broker_env: str | None = None  # the variable holding amqp://... or redis://...
    queue: str = Field(default="window.fleet", pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    # Redis: how long a task taken by a worker may stay unacknowledged before the broker
    # gives it to another worker; default: every phase's deadline added up, plus an hour.
    visibility_timeout: Duration | None = None

    @model_validator(mode="after")
    def _broker_for_celery(self) -> EngineSection:
        if self.kind == "celery" and not self.broker_env:
            raise ValueError('[engine] kind = "celery" needs broker_env, the variable holding'
                             " the broker's amqp:// or redis:// URL")
        if self.kind == "builtin" and self.broker_env:
            raise ValueError('[engine] broker_env is for kind = "celery" only')
        return self


class FleetFile(_Section):
    config: str = "window.toml"
    engine: EngineSection = EngineSection()
    concurrency: int = Field(default=1, ge=1, le=64)
    canary: TargetName | None = None  # default: the first target
    targets: list[TargetEntry] = []
    catalog: CatalogSection | None = None

    @model_validator(mode="after")
    def _one_list_of_targets(self) -> FleetFile:
        if bool(self.targets) == (self.catalog is not None):
            raise ValueError("give either [[targets]] entries or a [catalog], and only one")
        names = [t.name for t in self.targets]
        if twice := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"target name {twice!r} is used twice")
        if self.canary and self.targets and self.canary not in names:
            raise ValueError(f"canary {self.canary!r} is not one of the [[targets]]")
        return self


@dataclass(frozen=True)
class Fleet:
    path: Path
    spec: FleetFile
    settings: Settings

    @property
    def config_path(self) -> Path:
        return config_path(self.path, self.spec)


def config_path(path: Path, spec: FleetFile) -> Path:
    """The shared window.toml, relative to the fleet file's folder."""
    return (path.resolve().parent / spec.config).resolve()


@dataclass(frozen=True)
class Target:
    name: str
    url: str = field(repr=False)
    staging_url: str | None = field(default=None, repr=False)


def load(path: Path) -> Fleet:
    """The fleet file and the window config it names, or one ConfigError sentence."""
    raw = config.read_toml(path, "fleet file")
    try:
        spec = FleetFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {config.describe(exc).removeprefix(': ')}.") from exc
    return Fleet(path, spec, config.load(config_path(path, spec)))


def targets(fleet: Fleet) -> list[Target]:
    """The targets in order, their URLs read from the environment or the catalog (and
    registered for redaction: a catalog's URLs hold passwords)."""
    found = _listed(fleet) if fleet.spec.targets else _catalogued(fleet)
    if not found:
        raise ConfigError(f"{fleet.path}: the [catalog] query returned no targets.")
    names = [t.name for t in found]
    if twice := next((n for n in names if names.count(n) > 1), None):
        raise ConfigError(f"{fleet.path}: the [catalog] query returned target {twice!r} twice.")
    if fleet.spec.canary and fleet.spec.canary not in names:
        raise ConfigError(f"{fleet.path}: canary {fleet.spec.canary!r} is not among the"
                          " targets the [catalog] query returned.")
    _distinct_databases(fleet, found)
    return found


def _variable(fleet: Fleet, name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{fleet.path}: {name} is not set: it must hold the {what} URL.")
    register_url(value)
    return value


def _listed(fleet: Fleet) -> list[Target]:
    return [Target(t.name, _variable(fleet, t.url_env, f"target {t.name!r} database"),
                   _variable(fleet, t.staging_url_env, f"target {t.name!r} staging database")
                   if t.staging_url_env else None)
            for t in fleet.spec.targets]


def _catalogued(fleet: Fleet) -> list[Target]:
    catalog = fleet.spec.catalog
    assert catalog is not None  # noqa: S101 - FleetFile validated one source
    rows = _query_catalog(fleet, _variable(fleet, catalog.url_env, "catalog database"))
    return [_catalog_target(fleet, row) for row in rows]


def _query_catalog(fleet: Fleet, url: str) -> list[tuple[Any, ...]]:
    catalog = fleet.spec.catalog
    assert catalog is not None  # noqa: S101 - FleetFile validated one source
    try:
        conn = psycopg.connect(url, autocommit=True,
                               connect_timeout=max(1, round(catalog.connect_timeout)))
    except psycopg.Error as exc:
        raise GateRefused(f"{fleet.path}: the catalog database ({catalog.url_env}) cannot be"
                          f" reached: {_first_line(exc)}; nothing was done.") from exc
    with conn:
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, false),"
                         " set_config('default_transaction_read_only', 'on', false)",
                         (str(max(1, round(catalog.statement_timeout * 1000))),))
            return conn.execute(catalog.query.encode()).fetchall()
        except psycopg.Error as exc:
            raise ConfigError(f"{fleet.path}: the [catalog] query failed:"
                              f" {_first_line(exc)}.") from exc


def _catalog_target(fleet: Fleet, row: Sequence[Any]) -> Target:
    if len(row) not in (2, 3):
        raise ConfigError(f"{fleet.path}: the [catalog] query must return (name, url) or"
                          f" (name, url, staging_url) rows, not {len(row)} columns.")
    name, url, staging = (*row, None)[:3]
    for value in (url, staging):
        register_url(value if isinstance(value, str) else None)
    if not isinstance(name, str) or not re.fullmatch(TARGET_NAME, name):
        raise ConfigError(redact(f"{fleet.path}: the [catalog] query returned {name!r}, which"
                                 " is not a target name (letters, digits, '_', '.' and '-')."))
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{fleet.path}: the [catalog] query returned no URL for {name!r}.")
    if staging is not None and not isinstance(staging, str):
        raise ConfigError(f"{fleet.path}: the [catalog] query's staging_url for {name!r} is"
                          " not text.")
    return Target(name, url.strip(), staging.strip() if staging else None)


def _distinct_databases(fleet: Fleet, found: list[Target]) -> None:
    """Two targets on one database would be two windows on it: refused before anything."""
    seen: dict[str, str] = {}
    for target in found:
        try:
            db = str(pg.Db.from_url(target.url))
        except (psycopg.Error, ValueError) as exc:
            raise ConfigError(f"{fleet.path}: target {target.name!r} has no valid PostgreSQL"
                              " URL.") from exc
        if db in seen:
            raise ConfigError(f"{fleet.path}: targets {seen[db]!r} and {target.name!r} are the"
                              f" same database ({db}).")
        seen[db] = target.name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def check_staging(fleet: Fleet, found: list[Target], *, skip_staging: bool) -> None:
    """Rehearsals must not migrate one staging database at once; skipping them takes the
    config's consent too, as for ``window run``."""
    settings, concurrency = fleet.settings, fleet.spec.concurrency
    if skip_staging and not settings.staging.skip:
        raise UsageError("--skip-staging also needs [staging] skip = true in the config:"
                         " skipping the rehearsal takes both, on purpose.")
    shared = [t.name for t in found if t.staging_url is None]
    if shared and settings.staging.needs_url:
        _variable(fleet, settings.staging.url_env, f"staging database (for {shared[0]!r})")
    if shared and concurrency > 1 and settings.staging.mode == "url" and not skip_staging:
        raise ConfigError(f"{fleet.path}: with concurrency {concurrency}, several targets would"
                          f" rehearse on the one staging database ({settings.staging.url_env})"
                          " at once: give each target its own staging_url_env, use [staging]"
                          ' mode = "clone", or run with --skip-staging.')


BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss")


def broker_url(fleet: Fleet) -> str:
    """The Celery broker's URL from ``[engine] broker_env`` (registered for redaction)."""
    name = fleet.spec.engine.broker_env
    assert name is not None  # noqa: S101 - EngineSection validated it for celery
    url = _variable(fleet, name, "Celery broker (amqp:// or redis://)")
    if url.split("://", 1)[0].lower() not in BROKER_SCHEMES or "://" not in url:
        raise ConfigError(f"{fleet.path}: {name} must hold an amqp:// or redis:// URL.")
    return url


def max_window_seconds(settings: Settings) -> float:
    """The longest a target's window can take: every phase's deadline, forward and back."""
    return sum(float(v) for v in settings.timeouts.model_dump().values())


def waves(names: Sequence[str], canary: str, concurrency: int) -> list[list[str]]:
    """The canary alone, then the others in order, ``concurrency`` at a time."""
    rest = [n for n in names if n != canary]
    return [[canary], *(rest[i:i + concurrency] for i in range(0, len(rest), concurrency))]


def plan(fleet: Fleet) -> dict[str, Any]:
    """``window fleet plan``: the targets by name (never a URL), the canary and the waves."""
    names = [t.name for t in targets(fleet)]
    canary = fleet.spec.canary or names[0]
    return {"fleet": fleet.path.name, "window": fleet.settings.window.name,
            "engine": fleet.spec.engine.kind, "concurrency": fleet.spec.concurrency,
            "targets": names, "canary": canary,
            "waves": waves(names, canary, fleet.spec.concurrency)}


def plan_text(facts: dict[str, Any]) -> str:
    lines = [f"fleet {facts['fleet']}: window {facts['window']!r} on {len(facts['targets'])}"
             f" targets, {facts['concurrency']} at a time ({facts['engine']} engine)"]
    lines += [f"  wave {i}: {', '.join(wave)}" + (" (the canary)" if i == 0 else "")
              for i, wave in enumerate(facts["waves"])]
    return "\n".join(lines)


def secret_names(fleet: Fleet) -> list[str]:
    """Every variable the fleet reads a URL from, in order, each once: the targets' (or the
    catalog's), their staging databases', the shared config's staging, the broker's."""
    spec, settings = fleet.spec, fleet.settings
    names = [v for t in spec.targets for v in (t.url_env, t.staging_url_env) if v]
    if spec.catalog is not None:
        names.append(spec.catalog.url_env)
    if settings.staging.needs_url and (spec.catalog is not None
                                       or any(t.staging_url_env is None for t in spec.targets)):
        names.append(settings.staging.url_env)
    if spec.engine.broker_env:
        names.append(spec.engine.broker_env)
    return list(dict.fromkeys(names))
