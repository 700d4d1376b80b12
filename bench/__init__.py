"""Benchmarks for ``window``: how much its backup and rollback cost over the raw PostgreSQL tools.

``python -m bench.run`` (``make bench``) builds a throwaway cluster with a generated shop
database, times ``pg_dump`` and ``pg_restore`` on it, runs two real windows that roll back
(one by swapping in the verified standby copy, one by restoring the archive), and writes the
comparison to BENCHMARKS.md. ``BENCH_GB`` sets the database size (default 1.0).
"""
