"""The command line: typer apps that parse, call a plain function and map the project's error
to its exit code. Only ``orchestrator.__main__`` imports this package."""
