"""PostgreSQL from the window's side: connections, client programs, archives, the migration
tools' tables, and a throwaway cluster."""
