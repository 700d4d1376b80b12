"""``window plan``: what ``run`` would do, resolved and validated, touching nothing."""

from __future__ import annotations

from orchestrator import gates, proc
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.machine import RECOVERY, forward
from orchestrator.redact import redact


def describe(settings: Settings) -> str:
    target, staging = gates.databases(settings, refusal=ConfigError)
    lines = [
        f"window {settings.window.name!r}",
        f"  production  {target}   (from ${settings.target.url_env})",
        f"  staging     {staging}   (from ${settings.staging.url_env})",
        f"  backup      {settings.path(settings.backup.dir)}/<run_id>  (pg_dump -Fd"
        f" -j{settings.backup.jobs}, compress {settings.backup.compress})",
        f"  state       {settings.state_dir}",
        f"  banner on   {redact(proc.describe(settings.banner.on))}",
        f"  banner off  {redact(proc.describe(settings.banner.off))}",
        f"  migrate     {redact(proc.describe(settings.migrate.command))}",
        *([f"  tool        {settings.migrate.tool}, its table against"
           f" {settings.migrate.files or '(no files: failures only)'}"]
          if settings.migrate.tool != "none" else []),
        f"  drain       up to {settings.migrate.drain_timeout:g}s for busy sessions"
        + (", ending those idle in a transaction"
           if settings.migrate.terminate_idle_in_transaction else ""),
        "",
        "  phases (timeout):",
        *[f"    {p:<20} {settings.timeout(p):>6g}s" for p in forward(settings.backup.when)],
        "  on failure after the banner is up:",
        *[f"    {p:<20} {settings.timeout(p):>6g}s" for p in RECOVERY],
        "",
        "  checks, on staging in the dry-run and on production after the migration:",
        *[f"    {c.name:<20} {c.kind:<8} timeout {c.timeout:g}s" for c in settings.checks],
        *[f"    {name:<20} built-in" for name in settings.builtin_checks],
        *_baseline(settings),
        f"  monitor     every {settings.monitor.interval:g}s during migrate and rollback"
        if settings.monitor.enabled else "  monitor     off",
    ]
    return "\n".join(lines)


def _baseline(settings: Settings) -> list[str]:
    section = settings.baseline
    if not (section.queries or section.from_pg_stat_statements):
        return []
    busiest = f", the {section.from_pg_stat_statements} busiest statements of" \
        " pg_stat_statements" if section.from_pg_stat_statements else ""
    return ["", "  baseline, before the banner and again in post_check (median of"
                f" {section.runs}; slower than {section.max_slowdown:g}x:"
                f" {section.on_slowdown}){busiest}:",
            *[f"    {q.name}" for q in section.queries]]
