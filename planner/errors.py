"""Errors the CLI turns into one clear line and an exit code, never a traceback."""
import sys


class PlanError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix."""

    exit_code = 1


class UsageError(PlanError):
    """Bad input on the command line or in a file (unknown model, malformed SLO...): exit 2."""

    exit_code = 2


class NoDeviceError(PlanError):
    """The device asked for is not there (no GPU, torch without CUDA): exit 3, as `plan profile` has always said."""

    exit_code = 3


def validation_problem(exc) -> str:
    """A pydantic ValidationError as one line naming the field, the problem and the value given: its own text
    spans several lines and ends in a documentation URL."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    given = first.get("input")
    shown = f" (got {given!r})" if where and isinstance(given, (str, int, float, bool)) else ""
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{msg}{shown}{more}"


def yaml_problem(exc) -> str:
    """A YAML parser error as one line ("line 2, column 4: mapping values are not allowed here"): PyYAML's own
    text quotes the offending line and draws a caret under it."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


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
