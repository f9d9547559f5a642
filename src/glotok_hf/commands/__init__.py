"""Subcommands of the `glotok` console script.

Every module in this package is one subcommand. It defines `register(subparsers)`, which adds its parser (with a
description, examples in the epilog, and `set_defaults(func=run)` where `run(args) -> int | None`). `glotok_hf.cli`
discovers the modules itself, so adding a subcommand never touches a shared file.
"""
