"""Errors meant for the user: the CLI prints their message on one line, without a traceback."""


class UserError(Exception):
    """Bad input a user can fix (a missing file, a malformed CSV, a wrong layout...)."""


class ConfigError(UserError):
    """A configuration key or value is wrong."""


class DataError(UserError):
    """A data file or folder is missing, unreadable or inconsistent."""


class TrainingError(UserError):
    """Training cannot go on (NaN loss, diverged), with what to try."""
