"""What the migration clinic reports, and about what: shared by its rule modules so that
none of them needs the others (or the CLI) to say where a problem is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem at one place. ``line`` is 1-based; 0 means the finding is about no line
    in particular (the squawk binary is missing), and is then left out of the text."""

    file: Path
    line: int
    rule: str
    message: str
    severity: Severity = "error"
    # True for a finding that cannot matter here (an index or a foreign key on a table the
    # same file creates, still empty, blocks nobody; a Prisma migration runs once, so IF NOT
    # EXISTS changes nothing, and with the lock_timeout and statement_timeout the window puts
    # in its URL): counted, shown only when asked for everything.
    moot: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.severity}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class Migration:
    """One migration file in the history, in the order the tool applies them."""

    name: str  # as the tool's table records it: Prisma's folder, Flyway's file name
    path: Path
    pending: bool  # not applied yet: the window will run it
