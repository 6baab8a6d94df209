"""Programmatic edges in a captured CUDA graph (Hopper and later): a kernel may launch before the kernel it
depends on has finished, and waits for it inside (`griddepcontrol.wait`), so its launch and prologue overlap
the predecessor's tail. Only safe into kernels that do wait before reading their inputs; which kernels those
are is measured (benchmarks/engine_probes.py --only pdl), not assumed.

Uses the CUDA driver API through ctypes (libcuda ships with every driver; no extra package). Edges are read
from the un-instantiated graph (`torch.cuda.CUDAGraph(keep_graph=True)`), and each chosen kernel-to-kernel edge
is replaced by a programmatic one, before `instantiate()`.
"""
from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

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
