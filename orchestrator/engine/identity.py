"""Who is acting: the name recorded in the audit trail, on a lease and on a fleet's record.

Light on purpose: ``window status`` reads a lease without loading psycopg or structlog.
"""

from __future__ import annotations

import getpass
import os


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"uid {os.getuid()}"
