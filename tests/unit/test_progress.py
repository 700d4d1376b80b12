from __future__ import annotations

import io

from orchestrator.toolkit.progress import TableProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_dump_progress_counts_tables_on_a_terminal() -> None:
    screen = Terminal()
    progress = TableProgress("dumping", 2, TableProgress.DUMPED, screen)
    assert progress.flags() == ["--verbose"]
    for line in ['pg_dump: dumping contents of table "public.b"',
                 "pg_dump: finished item 3343 TABLE DATA b",
                 'pg_dump: dumping contents of table "public.a"']:
        progress(line)
    assert screen.getvalue() == "\r  dumping: 1/2 tables\r  dumping: 2/2 tables\n"


def test_restore_progress_counts_finished_data_items() -> None:
    screen = Terminal()
    progress = TableProgress("restoring", 2, TableProgress.RESTORED, screen)
    for line in ["pg_restore: launching item 3342 TABLE DATA a",
                 "pg_restore: finished item 3343 TABLE DATA b",
                 "pg_restore: finished item 3340 INDEX a_i"]:
        progress(line)
    assert screen.getvalue() == "\r  restoring: 1/2 tables"


def test_silent_off_a_terminal() -> None:
    progress = TableProgress("dumping", 2, TableProgress.DUMPED, io.StringIO())
    assert not progress.enabled
    assert progress.flags() == []
