"""The `glotok` console script: one subcommand per module of `glotok_hf.commands`."""

import importlib
import os
import pkgutil
import sys

from . import commands

DESCRIPTION = "GloTok tokenizer, AR prior and pipeline: generate, reconstruct, build teachers, extract codes, eval."
EPILOG = """examples:
  glotok generate --class-labels 3 7 seven --num-images-per-label 4 --seed 0 --output grid.png
  glotok reconstruct photo.png --output recon.png
  glotok <command> --help
"""


def build_parser() -> commands.Parser:
    parser = commands.Parser(prog="glotok", description=DESCRIPTION, epilog=EPILOG)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, ImportError) as err:
        # a user error (or a missing optional package) carries an actionable message: no traceback (GLOTOK_DEBUG=1)
        if os.environ.get("GLOTOK_DEBUG"):
            raise
        print(f"glotok {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
