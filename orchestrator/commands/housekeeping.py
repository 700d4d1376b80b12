"""``window backups`` and ``window prune``: what the windows left behind, and tidying it.

Archives live in the backup folder (and on S3 when configured); the journal knows which run
made each and whether it was verified. Failed databases (``<db>_failed_<run_id>``) are kept
by every rollback until someone prunes them, behind the confirmation phrase.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg
import structlog

from orchestrator.config import Settings
from orchestrator.engine import gates, holding
from orchestrator.engine.audit import audited
from orchestrator.engine.facts import BACKUP
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import SETTLED
from orchestrator.errors import ExitCode, PhaseFailed, UsageError
from orchestrator.postgres import archive, databases, pg


@dataclass(frozen=True)
class Archive:
    run_id: str
    path: Path
    size_bytes: int
    age_s: float
    verified: bool
    s3_uri: str | None
    unfinished: bool  # or waiting for a person: its archive may still be needed


def archives(settings: Settings, journal: Journal | None) -> list[Archive]:
    """Local archives, newest first, with what the journal says of them."""
    folder = settings.path(settings.backup.dir)
    runs = {run.run_id: run for run in journal.runs()} if journal else {}
    found = []
    for path in sorted(folder.glob("*/toc.dat")) if folder.is_dir() else []:
        run_id = path.parent.name
        facts = (journal.get(run_id, BACKUP) if journal else None) or {}
        run = runs.get(run_id)
        found.append(Archive(
            run_id, path.parent, archive.size_bytes(path.parent),
            time.time() - path.stat().st_mtime, bool(facts.get("verified")),
            facts.get("s3_uri"), run is not None and run.state not in SETTLED))
    return sorted(found, key=lambda a: a.age_s)


def failed_databases(conn: Any, dbname: str) -> list[tuple[str, int]]:
    """``<db>_failed_*`` databases on the server, with their size in bytes."""
    rows = conn.execute(
        "SELECT datname, pg_database_size(oid) FROM pg_database WHERE starts_with(datname, %s)"
        " ORDER BY datname", (f"{dbname}_failed_",)).fetchall()
    return [(str(name), int(size)) for name, size in rows]


def listing(settings: Settings, journal: Journal | None, target: pg.Db | None) -> str:
    lines = [f"{'run':<26} {'size':>10} {'age':>8}  {'verified':<8}  where"]
    for item in archives(settings, journal):
        where = "disk" + (f", {item.s3_uri}" if item.s3_uri else "")
        flag = "yes" if item.verified else "no"
        lines.append(f"{item.run_id:<26} {_size(item.size_bytes):>10} {_age(item.age_s):>8}"
                     f"  {flag:<8}  {where}" + ("  (window unfinished)" if item.unfinished
                                                else ""))
    if len(lines) == 1:
        lines.append(f"(no archives in {settings.path(settings.backup.dir)})")
    if settings.backup_s3_uri:
        lines += ["", *_on_s3(settings.backup_s3_uri)]
    if target is None:
        lines += ["", f"(set ${settings.target.url_env} to list retained _failed_ databases)"]
        return "\n".join(lines)
    with pg.connect(target.on(settings.target.maintenance_db),
                    time.time() + settings.target.connect_timeout) as conn:
        kept = failed_databases(conn, target.dbname)
    lines += ["", f"retained failed databases on {target.host}:{target.port}:"]
    lines += [f"  {name:<40} {_size(size):>10}" for name, size in kept] or ["  (none)"]
    return "\n".join(lines)


def _on_s3(uri: str) -> list[str]:
    from orchestrator.cloud import s3  # boto3 only when S3 is configured

    try:
        found = s3.list_archives(uri)
    except PhaseFailed as exc:
        return [f"archives on {uri}: cannot list them ({exc.message})"]
    lines = [f"archives on {uri}:"]
    lines += [f"  {a['name']:<26} {_size(a['size_bytes']):>10}  {a['last_modified'][:19]}"
              + ("" if a["complete"] else "  (upload unfinished: no manifest)") for a in found]
    return lines if found else [*lines, "  (none)"]


def doomed_archives(settings: Settings, journal: Journal | None, keep: int) -> list[Path]:
    """All but the newest ``keep`` archives (never one an unfinished window needs)."""
    return [a.path for a in archives(settings, journal)[keep:] if not a.unfinished]


def delete_archives(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path)
        archive.manifest_path(path).unlink(missing_ok=True)


def doomed_databases(settings: Settings, journal: Journal | None, target: pg.Db) -> list[str]:
    """The retained ``_failed_`` databases, except those of a window still open or waiting
    for a person (``needs_attention``): that evidence may still be needed."""
    open_runs = [r.run_id for r in (journal.runs() if journal else [])
                 if r.state not in SETTLED]
    with _maintenance(settings, target) as conn:
        return [name for name, _size in failed_databases(conn, target.dbname)
                if not any(name.endswith(run_id) for run_id in open_runs)]


def drop_databases(settings: Settings, target: pg.Db, names: list[str]) -> None:
    with _maintenance(settings, target) as conn:
        for name in names:
            databases.drop(conn, name)


def _maintenance(settings: Settings, target: pg.Db) -> psycopg.Connection[Any]:
    return pg.connect(target.on(settings.target.maintenance_db),
                      time.time() + settings.target.connect_timeout)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


def show_backups(settings: Settings) -> str:
    target = None
    if os.environ.get(settings.target.url_env):
        target = gates.database(settings, settings.target.url_env, "target", UsageError)
    return listing(settings, holding.reader(settings), target)


def prune(settings: Settings, confirm: str | None, *, keep: int | None,
          failed_databases: bool, stdin: TextIO | None = None) -> int:
    if keep is None and not failed_databases:
        raise UsageError("say what to prune: --keep N (archives) and/or --failed-databases.")
    with audited(settings, "prune"):
        target = gates.database(settings, settings.target.url_env, "target") \
            if failed_databases else None
        journal = holding.reader(settings)
        # What would go, looked up before anything goes: a server out of reach stops prune
        # here, before it deleted anything, as its exit code (2) says.
        names = doomed_databases(settings, journal, target) if target is not None else []
        paths = doomed_archives(settings, journal, keep) if keep is not None else []
        if not (names or paths):
            print("nothing to prune: no archive past --keep, no retained _failed_ database.")
            return ExitCode.COMPLETED
        print("prune deletes:", *[f"  archive  {path}" for path in paths],
              *[f"  database {name} (on {target})" for name in names], sep="\n")
        gates.confirm(settings, confirm, f"prune deletes the {len(paths)} archive(s) and"
                      f" {len(names)} database(s) listed above.", stdin)
        logger = structlog.get_logger()
        if target is not None:
            drop_databases(settings, target, names)
            for name in names:
                logger.info("failed_database_dropped", database=name)
        delete_archives(paths)
        for path in paths:
            logger.info("archive_pruned", path=str(path))
    return ExitCode.COMPLETED
