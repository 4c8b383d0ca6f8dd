"""The ``archsearch`` console script: the command line, with Ctrl-C handled from the start.

Importing the ``archsearch`` package loads torch and timm (seconds). A Ctrl-C during those
imports, or a second one while the command is already shutting down, would otherwise end in a
Python traceback; here both end with the one line ``archsearch: interrupted`` and exit code 130.
This module imports nothing heavy itself, so it is in place before the package loads.
"""

from __future__ import annotations

import signal
import sys


def _interrupted() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C while we leave
    sys.stderr.write("archsearch: interrupted\n")
    return 130


def main() -> int:
    try:
        from archsearch.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        return _interrupted()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
