"""Running: the library entry point, the supervisor that watches the processes, their lifecycle."""
