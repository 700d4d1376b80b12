"""``window --help`` as typer prints it on a terminal of 80 columns or more, kept here so
``orchestrator.cli.light`` answers it without importing typer. Generated: after changing a
command or its help, run ``.venv/bin/python -m tests.unit.test_light`` to write it again
(``tests/unit/test_light.py`` fails until then).
"""

TEXT = """\
Usage: window [OPTIONS] COMMAND [ARGS]...

  Run a production PostgreSQL maintenance window as a durable state machine.

Options:
  --version   Show the version and exit.
  -h, --help  Show this message and exit.

Commands:
  run       Pass the safety gates, then run the whole window.
  rehearse  Run preflight and the staging rehearsal alone; `run` reuses a
            recent success.
  resume    Continue the last unfinished window from its journal.
  abort     Roll the running (or crashed) window back; before the banner, just
            stop it.
  unlock    Break the S3 state's lease when its runner is gone for sure
            (audited).
  status    Where the window stands, phase by phase; works while a run is in
            progress.
  report    Write a window's report.md and report.html again; print their
            paths.
  history   Past windows, newest first: outcome, exit code, total and per-
            phase durations.
  plan      Validate config and environment and print what `run` would do;
            touches nothing.
  announce  Send the advance notice (communication.notice) through notify's
            URLs; print it.
  lint      Lint the pending migration files (the migration clinic); exit 3 on
            any error.
  backups   Backups with size, age, verified or not, and where; retained
            _failed_ databases.
  prune     Delete old archives and/or retained failed databases, behind the
            phrase.
  init      Write an annotated window.toml and .github/workflows/maintenance-
            window.yml here.
  demo      Run two windows against a throwaway local PostgreSQL: one
            succeeds, one rolls back.
  fleet     Run the window on every database of a fleet: a canary first, then
            waves."""
