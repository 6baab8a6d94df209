"""What every microbenchmark needs to know about the run: where it executes, how it times, how big
the cache is that input rotation must defeat, and where to leave notes for the output file."""
from __future__ import annotations

from dataclasses import dataclass, field

from profilers.timing import Timer


@dataclass
class BenchContext:
    device: str                         # "cuda" | "cpu"
    timer: Timer
    cache_bytes: float                  # L2 on a GPU; a last-level-cache guess on the CPU
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def release(self) -> None:
        """Return cached device memory (called after every point, once its buffers are out of scope) so
        big buffers of one shape never block the next."""
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def make_context(device: str, timer: Timer) -> BenchContext:
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        # H100/H200 have 50-60 MB; assume the larger when torch does not say.
        cache = float(getattr(props, "L2_cache_size", 0) or 60 << 20)
        return BenchContext("cuda", timer, cache)
    import torch

    # Tiny CPU kernels spend more time waking a thread pool than computing (8 ms vs 0.1 ms for a
    # 256-wide bf16 GEMV on a 2-core VM): one thread gives stable numbers.
    torch.set_num_threads(1)
    # CPU sweeps are tiny and exist to exercise the code path: a small cache guess keeps the rotation
    # (and the run) short while still cycling several sets.
    return BenchContext("cpu", timer, float(512 << 10), notes=["CPU timings use one thread"])
