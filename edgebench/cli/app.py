"""The Typer application and its sub-apps; the command modules register on them."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmark small language models on edge devices: prefill, decode, memory, ops.")
models_app = typer.Typer(help="Synthetic models with the shapes of public SLMs.", pretty_exceptions_enable=False)
app.add_typer(models_app, name="models")
devices_app = typer.Typer(help="Device profiles: what a device is and what a fair run needs.", pretty_exceptions_enable=False)
app.add_typer(devices_app, name="devices")

DEFAULT_OUT = Path("reports")


def err(msg: str) -> None:
    typer.echo(f"edgebench: error: {msg}", err=True)
