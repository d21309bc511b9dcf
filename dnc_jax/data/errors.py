"""The exceptions data and config code raise for bad or missing input."""


class DataError(Exception):
    """Bad or missing data, told in one line that names the path and the config key to set."""


class ConfigError(DataError, ValueError):
    """A config value that cannot work, told in one line that names the key (`main` prints
    it like a DataError; a ValueError to code that checks values)."""
