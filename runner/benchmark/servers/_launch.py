"""`python -m runner.benchmark.servers._launch CMD...`: exec CMD so that it dies with its parent (Linux).

PR_SET_PDEATHSIG survives exec: if qrun is killed (even SIGKILL), the kernel sends the server
SIGTERM. Elsewhere this is a plain exec.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = int(os.environ.get("QRUN_SERVER_PARENT", os.getppid()))
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            sys.exit(1)
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
