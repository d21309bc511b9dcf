"""The one exception data code raises for bad or missing input."""


class DataError(Exception):
    """Bad or missing data, told in one line that names the path and the config key to set."""
