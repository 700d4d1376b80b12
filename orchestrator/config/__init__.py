"""Read and validate window.toml into typed settings.

Validation is pydantic's; this module only turns its first complaint into one sentence
that names the file and the key, because that is all an engineer at 2 a.m. needs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError

from orchestrator.config.checks import (
    BUILTIN_CHECKS,
    CHECK_KINDS,
    Check,
    CommandCheck,
    HttpCheck,
    LogCheck,
    SqlCheck,
)
from orchestrator.config.sections import (
    TARGET_NAME,
    BackupSection,
    BannerSection,
    BaselineQuery,
    BaselineSection,
    CommunicationSection,
    ContactsSection,
    LintSection,
    MigrateSection,
    MonitorSection,
    NotifySection,
    StagingSection,
    StateSection,
    TargetSection,
    TimeoutsSection,
    WindowSection,
    baseline_entries,
    require_contacts,
    unfilled_contacts,
)
from orchestrator.config.values import (
    DEFAULT_TIMEOUTS,
    MAX_DURATION_SECONDS,
    Command,
    Duration,
    Section,
    parse_duration,
    shown,
)
from orchestrator.errors import ConfigError

__all__ = [
    "BUILTIN_CHECKS",
    "CHECK_KINDS",
    "DEFAULT_TIMEOUTS",
    "MAX_DURATION_SECONDS",
    "TARGET_NAME",
    "BackupSection",
    "BannerSection",
    "BaselineQuery",
    "BaselineSection",
    "Check",
    "Command",
    "CommandCheck",
    "CommunicationSection",
    "ContactsSection",
    "Duration",
    "HttpCheck",
    "LintSection",
    "LogCheck",
    "MigrateSection",
    "MonitorSection",
    "NotifySection",
    "Settings",
    "SqlCheck",
    "StagingSection",
    "StateSection",
    "TargetSection",
    "TimeoutsSection",
    "WindowSection",
    "describe",
    "from_mapping",
    "load",
    "parse_duration",
    "read_toml",
    "require_contacts",
    "shown",
    "unfilled_contacts",
]


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
    baseline: Annotated[BaselineSection, BeforeValidator(baseline_entries)] = \
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
        return self._scoped(f"targets/{name}")

    def for_fleet(self) -> Settings:
        """These settings with the state scoped to the fleet's runner: the lock (and with S3
        the lease) that lets one ``window fleet run`` or ``resume`` drive a fleet run at a
        time (``<state_dir>/fleet``, ``<uri>/fleet``)."""
        return self._scoped("fleet")

    def _scoped(self, scoped: str) -> Settings:
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
        # Names only: a name of another type is the model's to refuse, and comparing a value
        # nested thousands deep would recurse past Python's limit.
        names = [e["name"] for e in entries if isinstance(e, dict)
                 and isinstance(e.get("name"), str)] if isinstance(entries, list) else []
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"{path}: {where} name {shown(duplicated[0])} is used twice.")
    if nul := _holding_nul(raw):  # no path, command or environment can hold one
        # A key nested hundreds deep is named by its first levels: one readable line.
        raise ConfigError(f"{path}: {_printable(nul, 200)}: must not contain a NUL character.")
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
