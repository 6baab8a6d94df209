"""Errors the CLI turns into one clear line and an exit code, never a traceback."""
import sys


class PlanError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix."""

    exit_code = 1


class UsageError(PlanError):
    """Bad input on the command line or in a file (unknown model, malformed SLO...): exit 2."""

    exit_code = 2


def parser_errors() -> tuple[type[Exception], ...]:
    """What the command-line framework raises for an unknown option or a bad value: click's errors, and typer's
    own copy of them (typer 0.2x vendors click; its errors are not click's classes, and click may be absent)."""
    import typer

    errors = [typer.TyperException] if hasattr(typer, "TyperException") else []
    try:
        import click
        errors.append(click.ClickException)
    except ImportError:
        pass
    return tuple(errors)


def show_parser_error(e: Exception) -> int:
    """Prints a parser error as the framework words it (usage line, then the problem); returns its exit code."""
    show = getattr(e, "show", None)
    if show is not None:
        show()
    else:
        print(f"error: {e}", file=sys.stderr)
    return getattr(e, "exit_code", 2)
