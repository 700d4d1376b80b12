"""window: a production PostgreSQL maintenance window as a durable state machine."""

from __future__ import annotations

__version__ = "0.1.0"  # pyproject.toml reads it: the distribution is pgwindow
