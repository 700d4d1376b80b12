"""The commands, one module per family, as plain typed functions returning an exit code."""
