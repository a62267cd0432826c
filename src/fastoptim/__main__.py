"""fastoptim's command line: `python -m fastoptim` and the `fastoptim` script.

`info` is parsed here; `bench` and `train` parse their own options (their
modules' `main(argv)`), so everything after their name is handed to them.
"""
import argparse
import os
import sys

from . import __version__

COMMANDS = {
    "info": "show the version, the backend in use, instruction sets, threads and build flags",
    "bench": "time fastoptim's Adam step against NumPy, the course's NumPy code, "
             "torch (if installed) and the machine's memory bandwidth",
    "train": "train the course's network on the moons data with gradient descent, "
             "momentum and Adam, and plot the result",
}


class _Formatter(argparse.HelpFormatter):
    """Lists the commands without the line argparse puts above them."""

    def _format_action(self, action):
        text = super()._format_action(action)
        if action.nargs == argparse.PARSER:
            text = text.split("\n", 1)[1]
        return text


def _parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=_Formatter,
        description="Fused, in-place optimizer updates in C for NumPy training code that "
                    "keeps its parameters in dicts.",
        epilog=f"'{prog} COMMAND --help' shows a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fastoptim {__version__}",
                        help="show fastoptim's version and exit")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help=COMMANDS["info"],
                               description="Show fastoptim's version, the backend in use, "
                                           "the instruction sets, threads and build flags.")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    for name in ("bench", "train"):
        commands.add_parser(name, help=COMMANDS[name], add_help=False)
    return parser, info


def main(argv=None, prog=None):
    """The command line; returns the exit status."""
    try:
        status = _main(argv, prog)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`fastoptim info | head -1`): stop quietly, as other
        # command-line tools do; stdout goes to devnull so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


def _main(argv, prog):
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or "fastoptim"
    parser, info = _parser(prog)
    # The top level has no option that takes a value, so the first word that is
    # not an option is the command.
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if at is not None and argv[at] in ("bench", "train"):
        parser.parse_args(argv[:at + 1])  # options before the command: --help, --version, typos
        rest = argv[at + 1:]
        if argv[at] == "bench":
            from .benchmarks.cli import main as bench_main

            return bench_main(rest, prog=f"{prog} bench")
        from .demo.train import main as train_main

        return train_main(rest, prog=f"{prog} train")
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        (info if args.command == "info" else parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:  # e.g. a lone "--"
        parser.print_help(sys.stderr)
        return 2
    from ._config import show_config

    show_config(as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m fastoptim"))
