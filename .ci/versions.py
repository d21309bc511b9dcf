"""One line: the Python and the versions of the packages a CI leg tests (what pip resolved).

Reads the installed distributions' metadata only (imports none of them), so it is instant.
    .venv/bin/python .ci/versions.py
"""
import importlib.metadata
import platform

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "torch")


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


print(", ".join([f"python {platform.python_version()}"] +
                [f"{name} {version(name)}" for name in PACKAGES]))
