"""The one exception type offrl raises for problems a user can fix: the CLI prints its message as one line."""


class OfflineRLError(Exception):
    """Bad input or a failed run: unknown agent or dataset, wrong shapes, corrupt file, NaN, divergence."""


class DivergedError(OfflineRLError):
    """A loss became NaN or infinite: the run stops and no score is written."""


class RunInterrupted(OfflineRLError):
    """SIGINT or SIGTERM stopped a run between two updates, after a checkpoint of that step was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for a process ended by a signal
