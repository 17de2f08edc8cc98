"""The `e2vpt` command line: one module per group of commands, `main` the entry point."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
