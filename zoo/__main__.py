"""``python -m zoo COMMAND ...``: ``train``/``eval`` (and ``evaluate``/``test``) go to ``zoo.cli`` (LightningCLI,
imported only then); ``list``, ``info``, ``export``, ``convert``, ``publish`` and ``cache`` go to ``zoo.commands``."""
from __future__ import annotations

import sys
from typing import Sequence

TRAINING_COMMANDS = ("train", "eval", "evaluate", "test")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the first argument; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TRAINING_COMMANDS:
        from zoo import cli  # lightning is heavy: import it only for training commands

        return int(cli.main(args) or 0)
    from zoo import commands

    return commands.main(args)


if __name__ == "__main__":
    sys.exit(main())
