"""What every `protoscope` subcommand shares: how it is declared and how it refuses bad input."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

# A subcommand's body: its own parser (for its error messages) and the parsed options → exit code.
Run = Callable[[argparse.ArgumentParser, argparse.Namespace], int]


def fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Bad options or values: one line naming what to fix, exit code 2, no traceback."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def command(sub: Any, name: str, summary: str, about: str, run: Run) -> argparse.ArgumentParser:
    """Subcommand `name`: `summary` in `protoscope --help`, `about` in its own --help, `run`
    its body (found by `dispatch`). Its parser, for the caller's flags."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=about)
    p.set_defaults(run=run, parser=p)
    return p


def dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand `args` were parsed for."""
    run: Run = args.run
    return run(args.parser, args)
