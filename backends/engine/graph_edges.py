"""The engine's CUDA graphs, captured with programmatic edges into cuBLAS kernels (Hopper and later).

A programmatic edge lets a kernel launch before the kernel it depends on has finished; the dependent waits
inside (`griddepcontrol.wait`) for its predecessor's completion and memory flush before reading, so its launch
and prologue overlap the predecessor's tail. That is only safe into kernels that do wait: cuBLAS's Hopper GEMMs
(nvjet) and its split-K reduce do (tests/test_engine_cuda_paths.py and `engine_probes.py --only pdl` launch one
early behind a kernel that writes its input ~40 us late; a kernel that does not wait reads the old input). The
Triton kernels that precede GEMMs let their dependents launch as they start (kernels.pdl_trigger). On an H200,
Llama-3.1-8B decode steps ran 1.5-3.3% faster at batch 1-128 (BENCHMARKS.md, fifteenth session).
PLAN_ENGINE_PDL_EDGES=0 turns it off.

Uses the CUDA driver API through ctypes (libcuda ships with every driver; no extra package). Edges are read
from the un-instantiated graph (`torch.cuda.CUDAGraph(keep_graph=True)`), and each chosen kernel-to-kernel edge
is replaced by a programmatic one, before `instantiate()`.
"""
from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

import torch

from .config import env_switch

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

CU_GRAPH_NODE_TYPE_KERNEL = 0
CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC = 1
CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC = 1   # fires when every block of the source has triggered or exited


class _EdgeData(ctypes.Structure):
    _fields_ = [("from_port", ctypes.c_ubyte), ("to_port", ctypes.c_ubyte), ("type", ctypes.c_ubyte),
                ("reserved", ctypes.c_ubyte * 5)]


class _KernelParams(ctypes.Structure):     # CUDA_KERNEL_NODE_PARAMS_v2
    _fields_ = [("func", ctypes.c_void_p), ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_mem_bytes", ctypes.c_uint), ("kernel_params", ctypes.c_void_p),
                ("extra", ctypes.c_void_p), ("kern", ctypes.c_void_p), ("ctx", ctypes.c_void_p)]


@functools.cache
def _driver() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _check(result: int, call: str) -> None:
    if result != 0:
        raise RuntimeError(f"{call} failed with CUresult {result}")


def _kernel_name(node: int) -> str | None:
    """The kernel's (mangled) name, or None for a node that is not a kernel."""
    cu = _driver()
    node_type = ctypes.c_int()
    _check(cu.cuGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(node_type)), "cuGraphNodeGetType")
    if node_type.value != CU_GRAPH_NODE_TYPE_KERNEL:
        return None
    params = _KernelParams()
    _check(cu.cuGraphKernelNodeGetParams_v2(ctypes.c_void_p(node), ctypes.byref(params)),
           "cuGraphKernelNodeGetParams")
    name = ctypes.c_char_p()
    if params.func:
        _check(cu.cuFuncGetName(ctypes.byref(name), ctypes.c_void_p(params.func)), "cuFuncGetName")
    else:
        _check(cu.cuKernelGetName(ctypes.byref(name), ctypes.c_void_p(params.kern)), "cuKernelGetName")
    return name.value.decode()


def edges(graph_handle: int) -> list[tuple[int, int, int]]:
    """(from node, to node, dependency type) of every edge of a cudaGraph_t."""
    cu = _driver()
    count = ctypes.c_size_t()
    g = ctypes.c_void_p(graph_handle)
    _check(cu.cuGraphGetEdges_v2(g, None, None, None, ctypes.byref(count)), "cuGraphGetEdges")
    n = count.value
    src, dst, data = (ctypes.c_void_p * n)(), (ctypes.c_void_p * n)(), (_EdgeData * n)()
    _check(cu.cuGraphGetEdges_v2(g, src, dst, data, ctypes.byref(count)), "cuGraphGetEdges")
    return [(src[i], dst[i], data[i].type) for i in range(n)]


def make_programmatic(graph_handle: int, into: Callable[[str], bool]) -> dict[str, int]:
    """Replaces every kernel-to-kernel edge whose destination kernel's name satisfies `into` with a programmatic
    edge. Returns how many edges were replaced, by destination name (for the log)."""
    cu = _driver()
    g = ctypes.c_void_p(graph_handle)
    names: dict[int, str | None] = {}
    replaced: dict[str, int] = {}
    for src, dst, kind in edges(graph_handle):
        for node in (src, dst):
            if node not in names:
                names[node] = _kernel_name(node)
        if kind == CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC or names[src] is None or names[dst] is None \
                or not into(names[dst]):
            continue
        a, b = (ctypes.c_void_p * 1)(src), (ctypes.c_void_p * 1)(dst)
        _check(cu.cuGraphRemoveDependencies_v2(g, a, b, (_EdgeData * 1)(), 1), "cuGraphRemoveDependencies")
        data = (_EdgeData * 1)(_EdgeData(CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC, 0,
                                         CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC))
        _check(cu.cuGraphAddDependencies_v2(g, a, b, data, 1), "cuGraphAddDependencies")
        replaced[names[dst]] = replaced.get(names[dst], 0) + 1
    return replaced


def is_cublas(name: str) -> bool:
    """cuBLAS's Hopper GEMM kernels and its split-K reduce."""
    return name.startswith("nvjet") or "splitKreduce" in name


@functools.cache
def enabled(device: torch.device) -> bool:
    """On (PLAN_ENGINE_PDL_EDGES, default 1) for a CUDA device of compute capability 9.0 or later whose driver
    has the graph-edge API (CUDA 12.3+)."""
    if device.type != "cuda" or not env_switch("PLAN_ENGINE_PDL_EDGES"):
        return False
    if torch.cuda.get_device_capability(device)[0] < 9:
        return False
    try:
        return all(hasattr(_driver(), f) for f in ("cuGraphGetEdges_v2", "cuGraphAddDependencies_v2", "cuFuncGetName"))
    except OSError:
        return False


def capture(fn: Callable, device: torch.device, pool=None):
    """(graph, fn's output): fn() captured into a new CUDA graph (in memory pool `pool`), its edges into cuBLAS
    kernels made programmatic where `enabled`. fn must have run once before (Triton compiles, cuBLAS handles)."""
    pdl = enabled(device)
    graph = torch.cuda.CUDAGraph(keep_graph=True) if pdl else torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool):
        out = fn()
    if pdl:
        make_programmatic(graph.raw_cuda_graph(), is_cublas)
        graph.instantiate()
    return graph, out


# ----------------------------------------------------------------------------------- checking that a kernel waits
if triton is not None:
    @triton.jit
    def _late_copy_kernel(src_ptr, dst_ptr, n, spins, BLOCK: tl.constexpr):
        tl.extra.cuda.gdc_launch_dependents()       # dependents may launch now, long before the store below
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(src_ptr + offs, mask=offs < n)
        acc = tl.zeros([BLOCK], tl.float32)
        for _ in range(spins):
            acc = acc * 0.999 + 1.0
        tl.store(dst_ptr + offs, tl.where(acc > -1.0, x, tl.zeros_like(x)), mask=offs < n)


def stale_reads(consume: Callable[[torch.Tensor], torch.Tensor], src: torch.Tensor,
                into: Callable[[str], bool] = is_cublas, reps: int = 6, spins: int = 20000) -> tuple[int, dict]:
    """(wrong results, edges made programmatic): a graph of [copy src -> x, storing ~40 us after it lets its
    dependents launch (20,000 spins on an H200); consume(x)], its edges into kernels named by `into` programmatic,
    replayed `reps` times with fresh src. A consumer that does not wait reads x's old contents (zeros)."""
    x = torch.zeros_like(src)

    def fn():
        _late_copy_kernel[(triton.cdiv(src.numel(), 1024),)](src, x, src.numel(), spins, BLOCK=1024)
        return consume(x)
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph(keep_graph=True)
    with torch.cuda.graph(graph):
        out = fn()
    replaced = make_programmatic(graph.raw_cuda_graph(), into)
    graph.instantiate()
    wrong = 0
    for _ in range(reps):
        src.copy_(torch.randn(src.shape, device=src.device))     # (fp8 has no normal_)
        x.zero_()
        graph.replay()
        wrong += not torch.allclose(out.float(), consume(src).float(), rtol=2e-2, atol=2e-2)
    return wrong, replaced
