"""The migration clinic: lint what a window is about to migrate, before anything runs."""
