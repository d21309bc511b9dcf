"""The defaults of every config key: `dnc_jax/defaults.py` owns them (each key with what it
does); this module keeps `from configs import default; default.get_config()` working for the
configs here and for users' own."""
from dnc_jax.defaults import get_config  # noqa: F401
