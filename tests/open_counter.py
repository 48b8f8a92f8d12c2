"""Run the `t2i-adapter` CLI and log every `.tar` file the process opens (one line per open) to
`$OPEN_LOG/rank-<RANK>.txt`: the test that each DDP process reads only its own shards launches this
script with `accelerate launch`. Python's audit hook sees every `open()`, webdataset's included."""

import os
import sys
from pathlib import Path


def _log_tar_opens(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".tar"):
        log = Path(os.environ["OPEN_LOG"]) / f"rank-{os.environ.get('RANK', '0')}.txt"
        with log.open("a") as handle:  # not a .tar: the hook does not see itself
            handle.write(Path(args[0]).name + "\n")


if __name__ == "__main__":
    sys.addaudithook(_log_tar_opens)
    from t2i_adapter.interfaces.cli.main import main

    sys.exit(main(sys.argv[1:]))
