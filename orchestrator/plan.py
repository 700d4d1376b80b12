"""``window plan``: what ``run`` would do, resolved and validated, touching nothing."""

from __future__ import annotations

from orchestrator import gates, proc
from orchestrator.config import BUILTIN_CHECKS, Settings
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
        "",
        "  phases (timeout):",
        *[f"    {p:<20} {settings.timeout(p):>6g}s" for p in forward(settings.backup.when)],
        "  on failure after the banner is up:",
        *[f"    {p:<20} {settings.timeout(p):>6g}s" for p in RECOVERY],
        "",
        "  checks, on staging in the dry-run and on production after the migration:",
        *[f"    {c.name:<20} {c.kind:<8} timeout {c.timeout:g}s" for c in settings.checks],
        *[f"    {name:<20} built-in" for name in BUILTIN_CHECKS
          if name not in settings.window.skip_checks],
    ]
    return "\n".join(lines)
