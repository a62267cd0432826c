"""python -m fastoptim {info,bench,train}"""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = ("info", "bench", "train")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m fastoptim {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "info":
        from ._config import show_config

        show_config()
        return 0
    if command == "bench":
        from .benchmarks.cli import main as bench_main

        return bench_main(rest)
    from .demo.train import main as train_main

    return train_main(rest)


if __name__ == "__main__":
    sys.exit(main())
