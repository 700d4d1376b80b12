"""What a window that follows production (``[backup] follow``) may leave on the server."""

from __future__ import annotations

from orchestrator.postgres.cluster import Cluster


def left_on_server(cluster: Cluster, prod_db: str) -> list[str]:
    """The window's slots, subscriptions and publications in production, its standby and
    its retained database (other tests' shops share the cluster)."""
    ours = f"datname ~ '^{prod_db}(_window_|_failed_|$)'"
    found = cluster.psql("SELECT string_agg(slot_name, ' ') FROM pg_replication_slots s JOIN"
                         " pg_database d ON d.datname = s.database WHERE slot_name LIKE"
                         f" 'window\\_%' AND {ours}").split()
    found += cluster.psql("SELECT string_agg(subname, ' ') FROM pg_subscription s JOIN"
                          " pg_database d ON d.oid = s.subdbid WHERE subname LIKE"
                          f" 'window\\_%' AND {ours}").split()
    for db in cluster.psql("SELECT string_agg(datname, ' ') FROM pg_database"
                           f" WHERE datallowconn AND {ours}").split():
        found += cluster.psql("SELECT string_agg(pubname, ' ') FROM pg_publication WHERE"
                              " pubname LIKE 'window\\_%'", dbname=db).split()
    return found
