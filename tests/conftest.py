"""Test-wide settings: CPU only, no network, small XLA thread pools."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Never let a test reach a hub or a data set download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DISABLE_DOWNLOAD", "1")
