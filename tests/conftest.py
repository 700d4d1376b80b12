"""The whole suite's pytest set-up: assertions in the shared helpers (tests/support) are
rewritten as in the test modules, so a failed wait or status check shows its values."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.support")
