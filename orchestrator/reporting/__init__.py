"""What people see of a window: ``window status``, the live panel, report.md / report.html and
the history."""
