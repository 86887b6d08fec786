"""User-facing errors: one line, `fvjax: error: <file>: <key>: <what is wrong and how to fix it>`, exit 2.

Only bad *input* (recipes, weights, data, flags) raises `UserError`; internal bugs keep their traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, NoReturn

EXIT_USAGE = 2


class UserError(Exception):
    """Bad user input. `where` is the file (or CLI flag), `key` the dotted key inside it."""

    def __init__(self, where: object, key: str | None, message: str):
        self.where = str(where) if where is not None else None
        self.key = key
        self.message = message
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.where, self.key) if p]
        return ": ".join(parts + [self.message])


def fail(where: object, key: str | None, message: str) -> NoReturn:
    raise UserError(where, key, message)


def report_and_exit(err: UserError) -> NoReturn:
    # Collapse newlines so the report stays one line whatever the message holds.
    print(f"fvjax: error: {' '.join(err.line().split())}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int | None]:
    """Wrap a CLI main so that a `UserError` becomes one stderr line and exit status 2 (after fvjax/cli_setup.py's
    start-up: compilation cache, quiet start)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from fvjax.cli_setup import prepare_cli

        prepare_cli()
        try:
            return main(*args, **kwargs)
        except UserError as err:
            report_and_exit(err)

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose own errors (unknown flag, missing value, bad choice) are one-line user errors too;
    `hint` ends the message (default: where --help is)."""

    def __init__(self, *args, hint: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint or f"see {self.prog} --help"

    def error(self, message: str) -> NoReturn:
        raise UserError("command line", None, f"{message} ({self.hint})")
