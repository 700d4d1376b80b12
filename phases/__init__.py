"""The window's phases, one module each, named in the order the machine runs them."""

from __future__ import annotations

from orchestrator.engine.phase import FakePhase, Phase, PhaseResult, Registry
from phases.backup import Backup
from phases.banner import BannerOff, BannerOn, RollbackBannerOff
from phases.migrate import Migrate
from phases.post_check import PostCheck
from phases.preflight import Preflight
from phases.rollback import Rollback
from phases.staging import StagingDryRun

__all__ = ["FakePhase", "Phase", "PhaseResult", "Registry", "default_registry"]


def default_registry() -> Registry:
    return Registry([
        Preflight(), StagingDryRun(), Backup(), BannerOn(), Migrate(), PostCheck(),
        BannerOff(), Rollback(), RollbackBannerOff(),
    ])
