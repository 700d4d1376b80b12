"""Every crash point a window passes, in order (see test_crash_sweep.py); recorded from real
runs, and checked against them by ``test_the_listed_points_are_the_real_ones``. The names say
what has just been committed or done: ``journal.<write>.<phase or fact>``,
``process.exited.<program>`` (a command finished, not yet journaled), ``pg.<database
action>``; ``#N`` counts repeats."""


def inserted(points: list[str], after: dict[str, list[str]]) -> list[str]:
    """``points`` with ``after[point]`` following each point it names."""
    return [q for p in points for q in (p, *after.get(p, ()))]


COMPLETES = [
    "journal.create_run#1",
    "journal.claim#1",
    "journal.start_phase.preflight#1",
    "journal.put.cluster_before#1",
    "journal.conclude_phase.preflight#1",
    "journal.start_phase.staging_dry_run#1",
    "journal.child_started.staging_dry_run#1",
    "process.exited.sh#1",
    "journal.child_ended#1",
    "journal.child_started.staging_dry_run/checks#1",
    "process.exited.sh#2",
    "journal.child_ended#2",
    "journal.put.rehearsal#1",
    "journal.record_rehearsal#1",
    "journal.conclude_phase.staging_dry_run#1",
    "journal.start_phase.backup#1",
    "journal.put.follow#1",  # the mode: off here (the shop's role may not replicate)
    "journal.child_started.backup#1",
    "process.exited.pg_dump#1",
    "journal.child_ended#3",
    "journal.child_started.backup#2",
    "process.exited.pg_restore#1",
    "journal.child_ended#4",
    "journal.put.backup#1",
    "pg.drop_database#1",
    "pg.create_database_like#1",
    "journal.child_started.backup#3",
    "process.exited.pg_restore#2",
    "journal.child_ended#5",
    "journal.put.backup#2",
    "journal.conclude_phase.backup#1",
    "journal.start_phase.banner_on#1",
    "journal.child_started.banner_on#1",
    "process.exited.sh#3",
    "journal.child_ended#6",
    "journal.put.writes_at_banner#1",
    "journal.conclude_phase.banner_on#1",
    "journal.start_phase.migrate#1",
    "journal.put.drain#1",
    "journal.child_started.migrate#1",
    "process.exited.sh#4",
    "journal.child_ended#7",
    "journal.put.migration#1",
    "journal.conclude_phase.migrate#1",
    "journal.start_phase.post_check#1",
    "journal.child_started.post_check/checks#1",
    "process.exited.sh#5",
    "journal.child_ended#8",
    "journal.conclude_phase.post_check#1",
    "journal.start_phase.banner_off#1",
    "journal.child_started.banner_off#1",
    "process.exited.sh#6",
    "journal.child_ended#9",
    "journal.conclude_phase.banner_off#1",
    "journal.skip_pending#1",
    "pg.drop_database#2",
    "journal.finish#1",
]

# The same window with a post-check that fails on production: from start_phase.rollback on.
ROLLS_BACK = [
    *COMPLETES[:COMPLETES.index("journal.start_phase.banner_off#1")],
    "journal.start_phase.rollback#1",
    "pg.swap.closed#1",
    "pg.swap.renamed_aside#1",
    "pg.swap#1",
    "journal.put.rollback#1",
    "journal.conclude_phase.rollback#1",
    "journal.start_phase.rollback_banner_off#1",
    "journal.child_started.rollback_banner_off#1",
    "process.exited.sh#6",
    "journal.child_ended#9",
    "journal.conclude_phase.rollback_banner_off#1",
    "journal.skip_pending#1",
    "journal.finish#1",
]

# A role that may not create databases (verify = "list", rollback = "in_place"): the same
# window without the standby copy, then production dumped, emptied and restored from the
# archive.
IN_PLACE = [
    *COMPLETES[:COMPLETES.index("pg.drop_database#1")],  # no standby copy from here
    "journal.conclude_phase.backup#1",
    "journal.start_phase.banner_on#1",
    "journal.child_started.banner_on#1",
    "process.exited.sh#3",
    "journal.child_ended#5",
    "journal.put.writes_at_banner#1",
    "journal.conclude_phase.banner_on#1",
    "journal.start_phase.migrate#1",
    "journal.put.drain#1",
    "journal.child_started.migrate#1",
    "process.exited.sh#4",
    "journal.child_ended#6",
    "journal.put.migration#1",
    "journal.conclude_phase.migrate#1",
    "journal.start_phase.post_check#1",
    "journal.child_started.post_check/checks#1",
    "process.exited.sh#5",
    "journal.child_ended#7",
    "journal.conclude_phase.post_check#1",
    "journal.start_phase.rollback#1",
    "journal.child_started.rollback#1",
    "process.exited.pg_dump#2",
    "journal.child_ended#8",
    "journal.put.rollback#1",
    "pg.empty_database#1",
    "journal.child_started.rollback#2",
    "process.exited.pg_restore#2",
    "journal.child_ended#9",
    "journal.put.rollback#2",
    "journal.conclude_phase.rollback#1",
    "journal.start_phase.rollback_banner_off#1",
    "journal.child_started.rollback_banner_off#1",
    "process.exited.sh#6",
    "journal.child_ended#10",
    "journal.conclude_phase.rollback_banner_off#1",
    "journal.skip_pending#1",
    "journal.finish#1",
]

# A role that may follow production ([backup] follow): the backup makes this run's publications
# and slot, the standby subscribes once proven, and behind the banner it catches up and lets go
# before the migration; a post-check fails, so the rollback swaps the followed standby in.
FOLLOWS = inserted(ROLLS_BACK, {
    "journal.put.follow#1": ["pg.follow.publications#1", "pg.follow.slot#1",
                             "journal.put.follow#2"],
    "journal.put.backup#2": ["pg.follow.subscribed#1", "journal.put.follow#3"],
    "journal.put.drain#1": ["pg.follow.unsubscribed#1", "pg.follow.slot_dropped#1",
                            "journal.put.follow#4"],
})

# The (path, point, ending) cases `make test` runs; `make test-crash` runs them all.
SAMPLE = {
    ("completes", "journal.start_phase.migrate#1", "resume"),
    ("completes", "process.exited.sh#4", "resume"),  # migrated, not yet journaled
    ("completes", "journal.conclude_phase.banner_on#1", "abort"),
    ("completes", "pg.drop_database#2", "resume"),  # ended, standby copy dropped, not journaled
    ("rolls_back", "pg.swap.renamed_aside#1", "resume"),  # inside the swap's transaction
    ("rolls_back", "pg.swap.closed#1", "abort"),
    ("in_place", "pg.empty_database#1", "resume"),  # production empty, evidence archived
    ("follows", "pg.follow.slot#1", "resume"),  # slot made, its snapshot lost with the process
    ("follows", "pg.follow.subscribed#1", "abort"),  # the standby follows, not yet journaled
    ("follows", "pg.follow.unsubscribed#1", "resume"),  # let go behind the banner, slot kept
}
