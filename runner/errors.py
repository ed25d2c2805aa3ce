"""User-facing errors: one line naming the config key and the fix."""


class UserError(Exception):
    """Bad input. Printed as a single line; the process exits non-zero."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        text = f"{key}: {problem}"
        if fix:
            text += f" -- fix: {fix}"
        super().__init__(text)
