"""The one error type the profilers raise; the CLI prints its message on one line and exits non-zero."""
from planner.errors import PlanError


class ProfilerError(PlanError):
    """The machine cannot be profiled as asked (no GPU, no pynvml, NCCL failed...); the message says why."""

    exit_code = 3
