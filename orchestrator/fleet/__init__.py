"""A fleet: the same window on many databases, canary first, then in waves."""
