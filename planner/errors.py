"""Errors the CLI turns into one clear line and an exit code, never a traceback."""


class PlanError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix."""

    exit_code = 1


class UsageError(PlanError):
    """Bad input on the command line or in a file (unknown model, malformed SLO...): exit 2."""

    exit_code = 2
