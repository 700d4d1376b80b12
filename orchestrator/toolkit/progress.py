"""A dump's or a restore's progress on one terminal line: ``pg_dump`` / ``pg_restore --verbose``
lines counted against the number of tables."""

from __future__ import annotations

import sys
from typing import TextIO


class TableProgress:
    """``pg_dump`` / ``pg_restore --verbose`` lines counted against the number of tables, shown
    on one terminal line; off a terminal (CI, pipes) it stays silent and asks for no
    ``--verbose`` at all."""

    DUMPED = "dumping contents of table"  # pg_dump, once per table (also with --jobs)
    RESTORED = "TABLE DATA"  # pg_restore: "finished item 3342 TABLE DATA orders"

    def __init__(self, what: str, total: int, marker: str, stream: TextIO | None = None
                 ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and total > 0
        self.what, self.total, self.done, self.marker = what, total, 0, marker

    def flags(self) -> list[str]:
        return ["--verbose"] if self.enabled else []

    def __call__(self, line: str) -> None:
        if self.marker in line and (self.marker == self.DUMPED or "finished item" in line):
            self.done = min(self.total, self.done + 1)
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r  {self.what}: {self.done}/{self.total} tables{end}")
            self.stream.flush()
