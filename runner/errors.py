"""User-facing errors: one line naming the config key and the fix."""
import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input. Printed as a single line; the process exits non-zero."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        text = f"{key}: {problem}"
        if fix:
            text += f" -- fix: {fix}"
        super().__init__(text)


@contextmanager
def exit_on_user_error():
    """Bad input met outside a job's MLflow run (e.g. the store itself): one line on stderr, exit 2.

    SystemExit passes through Hydra, which would print a traceback for any Exception.
    """
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
