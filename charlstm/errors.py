"""Errors a user can act on. Each message names the problem and says what to do next."""


class CharlstmError(Exception):
    """A problem with the user's input, files or settings (not a bug in charlstm)."""


class ConfigError(CharlstmError):
    """Settings that are out of range or do not fit together."""


class DataError(CharlstmError):
    """A text file that cannot be used for training or evaluation."""


class CheckpointError(CharlstmError):
    """A checkpoint that is missing, unreadable, unsafe or incompatible."""


class RunDirectoryError(CharlstmError):
    """A run directory that cannot be used (for example, it already holds a run)."""


class WriteError(CharlstmError):
    """A file that cannot be written: a full disk, a read-only file system, no permission."""


class CompressedFileError(CharlstmError):
    """A compressed file that cannot be decompressed here: damaged, truncated, from a newer
    format, made with another model or settings, or by a machine that computes other
    probabilities."""


class NumericalError(CharlstmError):
    """Training produced non-finite losses or gradients and stopped."""


class RunLockedError(RunDirectoryError):
    """Another process is training the run (it holds the run's lock)."""
