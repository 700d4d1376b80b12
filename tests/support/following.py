"""What a window that follows production (``[backup] follow``) may leave on the server."""

from __future__ import annotations

from orchestrator.postgres.cluster import Cluster


def left_on_server(cluster: Cluster) -> list[str]:
    """The window's slots, subscriptions and publications, anywhere on the cluster."""
    found = cluster.psql("SELECT string_agg(slot_name, ' ') FROM pg_replication_slots"
                         " WHERE slot_name LIKE 'window\\_%'").split()
    found += cluster.psql("SELECT string_agg(subname, ' ') FROM pg_subscription"
                          " WHERE subname LIKE 'window\\_%'").split()
    for db in cluster.psql("SELECT string_agg(datname, ' ') FROM pg_database"
                           " WHERE datallowconn").split():
        found += cluster.psql("SELECT string_agg(pubname, ' ') FROM pg_publication WHERE"
                              " pubname LIKE 'window\\_%'", dbname=db).split()
    return found
