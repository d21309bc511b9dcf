"""`dnc-jax <command> [flags]`: the installed entry point of every tool.

    dnc-jax train --config=sop --workdir=runs/sop     # = python -m dnc_jax.main
    dnc-jax evaluate --workdir=runs/sop                # = python -m dnc_jax.inference.evaluate
    dnc-jax embed | search | export | backbone ...     # = python -m dnc_jax.inference.<command>

Each command is its module run as a program, with its own flags (`dnc-jax <command> --help`).
`train --config` takes a file, or the name of a config shipped with the package (`sop`,
`cvpr/sop`, `pami/cub_learned`, `demo`, ...), so an installed copy needs no checkout.
"""
from __future__ import annotations

import os
import runpy
import sys

_TOOLS = "dnc_jax.inference."  # the tools that use a trained run
COMMANDS = {
    "train": ("dnc_jax.main", "train, or resume, a run from a config"),
    "evaluate": (_TOOLS + "evaluate", "re-evaluate a run with its data set's full protocol"),
    "embed": (_TOOLS + "embed", "embed image files with a trained run (.npy + paths)"),
    "search": (_TOOLS + "search", "the nearest indexed images of a query image"),
    "export": (_TOOLS + "export", "a trained run's evaluation embedder as an ONNX model"),
    "backbone": (_TOOLS + "backbone", "a trained run's backbone as a model.pretrained file"),
}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def usage() -> str:
    from dnc_jax import __version__

    lines = [f"dnc-jax {__version__}: Divide and Conquer deep metric learning in JAX",
             "usage: dnc-jax <command> [flags]   (dnc-jax <command> --help for its flags)", ""]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def shipped_config(name: str) -> str | None:
    """The file of a config shipped with the package ('sop', 'cvpr/sop.py'), or None."""
    stem = name[:-3] if name.endswith(".py") else name
    path = os.path.join(CONFIG_DIR, *stem.split("/")) + ".py"
    return path if not os.path.basename(stem).startswith("_") and os.path.isfile(path) else None


def resolve_config_flag(args: list[str]) -> list[str]:
    """`--config=NAME[:args]` (or `--config NAME`) -> the shipped file when NAME is not a file
    of its own."""
    def resolve(value):
        name, sep, rest = value.partition(":")
        shipped = None if os.path.exists(name) else shipped_config(name)
        return f"{shipped}{sep}{rest}" if shipped else value

    out = list(args)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve(arg[len("--config="):])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
    return out


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if args[0] == "--version":
        from dnc_jax import __version__

        print(__version__)
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"dnc_jax: unknown command {command!r}; one of {', '.join(COMMANDS)} "
              f"(dnc-jax --help)", file=sys.stderr)
        sys.exit(2)
    if command == "train":
        rest = resolve_config_flag(rest)
    module = COMMANDS[command][0]
    sys.argv = [f"dnc-jax {command}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=False)


if __name__ == "__main__":
    main()
