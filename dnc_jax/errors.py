"""The errors a user can cause, each told in one line that names the file, line or config key.

Every command-line tool catches `UserError` and prints its message without a traceback
(`dnc_jax.cli`); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Input or a request that cannot work; the message is one line saying what to do."""


class DataError(UserError):
    """Bad or missing data, told in one line that names the path and the config key to set."""


class ConfigError(DataError, ValueError):
    """A config value that cannot work, naming the key (a ValueError to code that checks
    values; a DataError to code written before configs had their own class)."""


class RunError(UserError):
    """A run that cannot start as asked (workdir locked, not writable, another config)."""


class RestoreError(UserError):
    """A workdir that cannot be used for inference: the message names the path at fault."""


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or inf; the run stops without saving, so the last checkpoint stays.
    Not a UserError: it is told in one line too, with its own exit status (3)."""
