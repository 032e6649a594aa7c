"""A worker for the fork server's tests: writes what it was given to a file, then exits or waits as told.

    python -m tests.support.forked OUT exit CODE | OUT wait
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    out, what = Path(sys.argv[1]), sys.argv[2]
    out.write_text(json.dumps({"argv": sys.argv[1:], "env": os.environ.get("FORKED_TEST"), "pid": os.getpid(),
                               "ppid": os.getppid(), "comm": Path("/proc/self/comm").read_text().strip(),
                               "main": __name__}))
    if what == "exit":
        sys.exit(int(sys.argv[3]))
    time.sleep(60)


if __name__ == "__main__":
    main()
