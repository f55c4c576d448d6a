"""The `relayq-dev` command: the local stack (`make run`) and the local Solana chain.

Development only: the production images install the `relayq` command
(relayq.cli), never this one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: relayq-dev {localstack,devchain} [options]

  localstack  run the whole system on local servers, in the foreground (make run)
  devchain    run the local Solana chain (LiteSVM) with the Jito API
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "localstack":
        from relayq.dev.localstack import main as localstack_main

        localstack_main(args[1:])
    elif args and args[0] == "devchain":
        from relayq.devchain.server import main as devchain_main

        devchain_main(args[1:])
    elif args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
    else:
        print(USAGE, end="", file=sys.stderr)
        sys.exit(2)
