"""Rehearsal records: what was rehearsed (a fingerprint of the migration files), so that
``window run`` can reuse a recent successful rehearsal, and production's migration refuses to
run files that changed since theirs was rehearsed."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.config import Settings
from orchestrator.engine import holding
from orchestrator.engine.facts import REHEARSAL
from orchestrator.engine.journal import Journal
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import migrations


def reusable(settings: Settings, journal: Journal, target: str, staging: str
             ) -> dict[str, Any] | None:
    """A successful rehearsal of exactly the current migration files, for this production and
    staging, younger than ``[staging] max_age``. Without ``[migrate] files`` nothing says what
    was rehearsed, so nothing is reused."""
    fingerprint = migrations.fingerprint(settings)
    if fingerprint is None:
        return None
    return journal.reusable_rehearsal(fingerprint, target, staging,
                                      time.time() - settings.staging.max_age)


def check_unchanged(settings: Settings, journal: Journal, run_id: str, moment: str) -> None:
    """Refuse to go on with migration files other than those rehearsed."""
    rehearsed = (journal.get(run_id, REHEARSAL) or {}).get("fingerprint")
    if rehearsed is None:
        return
    now = migrations.fingerprint(settings)
    if now != rehearsed:
        raise PhaseFailed(f"the migration files in {settings.migrate.files} changed after the"
                          f" rehearsal (sha256 {str(now)[:12]}, rehearsed {rehearsed[:12]});"
                          f" {moment}. Rehearse them again.")


def latest(settings: Settings) -> tuple[str, dict[str, Any] | None]:
    """The newest rehearsal journaled in the window's state, and its run id; nothing is
    created when there is no journal yet."""
    journal = holding.reader(settings)
    if journal is None:
        return "", None
    with journal:
        for run in journal.runs():
            if fact := journal.get(run.run_id, REHEARSAL):
                return run.run_id, fact
    return "", None
