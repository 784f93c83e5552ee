"""``imf-kg``: the command-line entry point.

Sub-commands live in :mod:`imf_kg.commands`, one module each, exposing ``add_parser(subparsers)`` which
registers the sub-command and sets ``func(args) -> int``. Errors caused by the user's input
(:class:`~imf_kg.errors.ToolkitError`) end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from imf_kg.errors import ToolkitError

COMMANDS = ("data", "train", "evaluate", "predict", "encode", "compare")


def build_parser(prog: str = "imf-kg", package: str = "imf_kg.commands", commands=COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    for name in commands:
        try:
            module = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{package}.{name}":
                continue  # sub-command not installed in this build
            raise
        module.add_parser(sub)
    return parser


def run(argv=None, prog: str = "imf-kg", package: str = "imf_kg.commands", commands=COMMANDS) -> int:
    parser = build_parser(prog, package, commands)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ToolkitError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    from imf_kg.training.memory import keep_freed_memory

    keep_freed_memory()  # see imf_kg/training/memory.py: about 2x faster 1-N steps on large graphs
    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
