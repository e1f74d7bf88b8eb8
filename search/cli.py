"""The ``python -m search`` command line (also installed as ``ghostnas``).

Each verb lives in ``search/commands/<verb>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. A user's mistake (:class:`space.UserError`, or a bad option) is one line
on stderr and exit status 2, never a traceback; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from space import UserError
from space.checks import one_line as _one_line

__all__ = ["main", "build_parser", "CliParser", "EXIT_USAGE"]

EXIT_USAGE = 2
_argv_seen: list[str] = []  # main()'s arguments, for the parsers' error hints
MAX_ERROR_CHARS = 600  # a message quoting a huge value from a file is cut in the middle

# verb -> (module under search.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "search the space: Ray Tune trials chosen by an Optuna sampler"),
    "space": ("space", "print the search space, its size and FLOPs range"),
    "show": ("show", "print an architecture's stage table with FLOPs and params"),
    "report": ("report", "write the Plotly HTML report of a run folder"),
    "export": ("export", "write a found architecture from a run folder to a JSON file"),
    "train": ("train", "train an architecture from scratch"),
    "latency-table": ("latency_table", "measure a latency lookup table for the search space"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where it informs: not for None, flags, or help that says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default  # `is`, not `in`: 0 == False and 1 == True
        if any(default is v for v in (None, True, False, argparse.SUPPRESS)) or "default" in text:
            return text
        return super()._get_help_string(action)


class CliParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix, not the whole usage block."""

    def error(self, message: str):  # type: ignore[override]
        if message.endswith("expected one argument"):
            flag = message.split()[1].rstrip(":")
            argv = _argv_seen
            after = argv[argv.index(flag) + 1:argv.index(flag) + 2] if flag in argv else []
            if after and after[0].startswith("-"):  # "--budget -5M": -5M looked like an option
                message += (f" ({after[0]!r} starts with '-', so it was read as an option; "
                            f"write {flag}={after[0]})")
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> CliParser:
    parser = CliParser(prog="python -m search", description=(
        "GhostNAS: neural architecture search over the GhostNet design space."),
        formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for verb, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text,
                           formatter_class=HelpFormatter)
        try:
            mod = importlib.import_module(f"search.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"search.commands.{module}":
                raise
            p.set_defaults(_module=None)
            continue
        mod.add_arguments(p)
        p.set_defaults(_module=mod, _parser=p)
    return parser


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` as the one line a user reads: its start (what) and end (the fix) kept."""
    return _one_line(message, limit, keep_end=True)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as users read them: one line, no source file and code line."""
    return f"warning: {one_line(str(message))}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    try:
        parser = build_parser()  # imports torch, long enough for a Ctrl-C to land in it
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    global _argv_seen
    _argv_seen = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras:  # named by the verb's parser, so the hint is that verb's --help
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args._module is None:
        parser.error(f"'{args.command}' is not built yet in this version")
    try:
        return int(args._module.run(args) or 0)
    except UserError as exc:
        sys.stderr.write(f"error: {one_line(str(exc))}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; results written so far are kept\n")
        return 130
    except BrokenPipeError:  # `python -m search show ... | head`
        return 0
