"""What phases do with a context, shared between them: dump, restore and verify, the
migration command, drain, checks and probes, the baseline, the rehearsal."""
