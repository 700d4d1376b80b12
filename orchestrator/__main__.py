"""Allow ``python -m orchestrator``."""

from __future__ import annotations

from orchestrator.cli.app import main

main()
