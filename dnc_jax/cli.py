"""The start-up every command-line tool shares: flags parsed by absl, quiet library logs, and a
user's mistake told in one line (exit 2) instead of a traceback.

    def main():            # reads absl flags; may raise dnc_jax.errors.UserError
        ...

    if __name__ == "__main__":
        cli.run(main)
"""
from __future__ import annotations

import difflib
import sys
from collections.abc import Callable

from absl import app, flags, logging

from dnc_jax.errors import NonFiniteLoss, UserError

EXIT_USER_ERROR = 2
EXIT_NON_FINITE_LOSS = 3


def run(main: Callable[[], None]) -> None:
    """`app.run` around `main()`: refuses stray arguments, keeps orbax and XLA at WARNING
    (they log every save, restore and compile at INFO) unless --verbosity is given, and turns
    a UserError into `dnc_jax: <message>` on stderr."""

    def absl_main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            main()
        except UserError as e:
            print(f"dnc_jax: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except NonFiniteLoss as e:
            print(f"dnc_jax: {e}", file=sys.stderr)
            sys.exit(EXIT_NON_FINITE_LOSS)

    app.run(absl_main, flags_parser=parse_flags)


def define_trained_run_flags(out_help: str, batch_help: str) -> None:
    """--workdir, --out and --batch_size of a tool that uses a trained run (embed, export).
    Call it when the tool runs as a program: two such modules may then be imported side by
    side without their flags clashing."""
    flags.DEFINE_string("workdir", None, "Training run folder (config.json, checkpoints/).")
    flags.DEFINE_string("out", None, out_help)
    flags.DEFINE_integer("batch_size", None, batch_help)
    flags.mark_flags_as_required(["workdir", "out"])


def parse_flags(argv):
    """absl's flag parsing, with a bad flag, config file or config override told in one line
    (exit 2) instead of absl's usage dump or a traceback from inside ml_collections."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(_config_file_error(str(e)) or str(e).strip().splitlines()[0])
    except (AttributeError, KeyError) as e:  # ml_collections: an override of an unknown key
        _fail(unknown_config_key(argv, e))
    except Exception as e:  # noqa: BLE001 - a config file is the user's Python: anything
        _fail(f"cannot load the --config file: {_first_line(e)}")


def _config_file_error(text: str) -> str | None:
    """The one line for a config file whose `get_config(...)` raised (e.g. an unknown name
    after the colon of --config=FILE:NAME): ml_collections reports it as a flag error whose
    first line says only 'Error whilst parsing config file', with the traceback as text."""
    if "Error whilst parsing config file" not in text:
        return None
    last = text.strip().splitlines()[-1]
    kind, sep, message = last.partition(": ")
    return f"cannot load the --config file: {kind.rsplit('.', 1)[-1]}{sep}{message}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    where = ""
    if isinstance(error, SyntaxError) and error.filename:
        where = f" ({error.filename}, line {error.lineno})"
        text = [error.msg]
    return f"{type(error).__name__}: {text[-1] if text else ''}{where}"


def unknown_config_key(argv, error) -> str:
    """The one line for `--config.<key>=...` naming a key the config lacks, with the nearest
    key of the defaults."""
    from dnc_jax import defaults

    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    known = _dotted_keys(defaults.get_config().to_dict())
    bad = next((key for key in overrides if key not in known
                and not any(k.startswith(key + ".") for k in known)), None)
    if bad is None:
        return f"cannot load the --config file: {_first_line(error)}"
    near = difflib.get_close_matches(bad, known, n=1)
    hint = f"; did you mean --config.{near[0]}?" if near else ""
    return f"--config.{bad}: the config has no key {bad!r}{hint}"


def _dotted_keys(tree, prefix="") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _dotted_keys(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def _fail(message: str):
    print(f"dnc_jax: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
