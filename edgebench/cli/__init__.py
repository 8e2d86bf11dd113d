"""The `edgebench` command. Thin: parses, calls library functions, returns an exit code.

Exit codes: 0 all good; 1 some case failed (the rest was measured and stored); 2 bad input or
usage (one line on stderr, nothing run); 3 a regression was found by compare; 4 compare found a
change past the threshold it could not decide (inconclusive); 130 interrupted.
"""

from __future__ import annotations

import sys

import typer

from edgebench.cli import fleet_cmds, model_cmds, run_cmds, store_cmds  # noqa: F401  (register the commands)
from edgebench.cli.app import app, err
from edgebench.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, InputError


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (so tests can call it in-process)."""
    try:  # typer >= 0.29 vendors click; older typer uses click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        import click.exceptions as click_exc

    try:
        rv = app(args=argv, prog_name="edgebench", standalone_mode=False)
        return int(rv or 0)
    except InputError as e:
        err(str(e))
        return EXIT_INPUT
    except click_exc.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        return EXIT_INPUT
    except click_exc.UsageError as e:
        err(e.format_message().replace("\n", " "))
        return EXIT_INPUT
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
