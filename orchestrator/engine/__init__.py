"""The engine: the state machine, the runner that drives it from the journal, and what a phase
gets (context, child processes with deadlines, gates, notifications)."""
