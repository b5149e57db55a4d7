"""Errors a user can fix: bad spec, data folder, checkpoint, run folder or flag.

The CLI turns every ``UserError`` into one message and exit code 2; anything else is a
failure of the run (exit code 1).
"""


class UserError(Exception):
    """Bad input. The message names the file, key or value and what is allowed."""


class SpecError(UserError):
    """An experiment spec, sweep file or override is invalid."""


class DataError(UserError):
    """A dataset folder does not follow the Lab4 layout or holds an unreadable file."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, or not written by cvae."""


class RunDirError(UserError):
    """A run folder is missing, or already holds a run that would be overwritten."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. The message names the step and the last values."""
