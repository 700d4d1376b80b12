"""What the backup says when the server's lock table is full: the arithmetic and the words."""

from __future__ import annotations

from orchestrator.postgres import lock_slots
from orchestrator.postgres.lock_slots import LockSettings

DEFAULTS = LockSettings(max_locks_per_transaction=64, max_connections=100,
                        max_prepared_transactions=0)


def test_the_advice_makes_room_for_every_table_on_top_of_todays_budget() -> None:
    assert lock_slots.advised(DEFAULTS, 10_000) == 192  # 64 + 100, rounded up to 64s
    assert lock_slots.advised(DEFAULTS, 100) == 128
    assert lock_slots.advised(LockSettings(10, 20, 0), 2000) == 128  # 10 + 100
    wider = LockSettings(64, 100, 100)
    assert lock_slots.advised(wider, 10_000) == 128  # prepared transactions have slots too
    for tables in (1, 999, 6_400, 50_000):
        advised = lock_slots.advised(DEFAULTS, tables)
        assert advised % 64 == 0
        assert (advised - DEFAULTS.max_locks_per_transaction) * DEFAULTS.sessions >= tables


def test_out_of_shared_memory_is_recognised_and_explained_in_one_sentence() -> None:
    output = ('pg_dump: error: query failed: ERROR:  out of shared memory\nHINT:  You might'
              ' need to increase max_locks_per_transaction.\n')
    assert lock_slots.ran_out(output)
    assert not lock_slots.ran_out("pg_dump: error: connection to server failed")

    said = lock_slots.explain("pg_dump", 10_000, DEFAULTS)

    assert said.startswith("pg_dump ran out of the server's lock table: ")
    assert "each of the 10,000 tables" in said
    assert "room for about 6,400 locks" in said
    assert "set max_locks_per_transaction = 192 (or more)" in said
    assert said.count(". ") == 0 and said.endswith(").")
