"""Signals that end a run as Ctrl-C does; apart from the scheduler so the command line installs them without torch."""


def interrupt_on_sigterm(signum: int, frame: object) -> None:
    """A job scheduler's SIGTERM ends the run as cleanly as Ctrl-C (finished cells saved, Ray stopped)."""
    raise KeyboardInterrupt
