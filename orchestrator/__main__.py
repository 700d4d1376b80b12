"""Allow ``python -m orchestrator``: the same entry point as the ``window`` script."""

from __future__ import annotations

from orchestrator.cli.light import main

main()
