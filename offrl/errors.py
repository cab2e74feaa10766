"""The one exception type offrl raises for problems a user can fix: the CLI prints its message as one line."""


class OfflineRLError(Exception):
    """Bad input or a failed run: unknown agent or dataset, wrong shapes, corrupt file, NaN, divergence."""


class DivergedError(OfflineRLError):
    """A loss became NaN or infinite: the run stops and no score is written."""
