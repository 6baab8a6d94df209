"""The one linear layer of the models: tensor-parallel slicing of checkpoint matrices plus a weight scheme."""
from __future__ import annotations

import torch
from torch import nn

from . import parallel
from .quant import SCHEMES


class Linear(nn.Module):
    """y = x W^T (+ b), where W stacks `out_sizes` checkpoint matrices (shard i fills rows of out_sizes[i]).

    Tensor parallel: `shards[i] = (start, rows)` is the slice of checkpoint matrix i this rank keeps (column
    parallel; default: all of it), or with `row_parallel` this rank keeps its share of the input columns and
    its output is a partial sum, all-reduced here unless `reduce=False` (the caller reduces a sum of them).
    `quant` picks the weight storage and GEMM (quant.SCHEMES); weights arrive full-size through
    `weight_loader` or `init_random` and are sliced, then quantized, on the way in.
    """

    def __init__(self, in_features: int, out_sizes: list[int], bias: bool = False, *,
                 shards: list[tuple[int, int]] | None = None, row_parallel: bool = False, reduce: bool = True,
                 quant: str = "none"):
        super().__init__()
        self.shards = shards or [(0, n) for n in out_sizes]
        self.out_sizes = [n for _, n in self.shards]
        self.cols = parallel.split(in_features) if row_parallel else (0, in_features)
        self.row_parallel, self.reduce = row_parallel, reduce
        self.scheme = SCHEMES[quant]
        self.scheme.create(self, sum(self.out_sizes), self.cols[1])
        self.bias = nn.Parameter(torch.empty(sum(self.out_sizes)), requires_grad=False) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard: int = 0) -> None:
        offset = sum(self.out_sizes[:shard])
        start, rows = self.shards[shard]
        if param is self.bias:
            param.data[offset:offset + rows].copy_(loaded[start:start + rows])
        else:
            c0, cols = self.cols
            self.scheme.store(self, offset, loaded[start:start + rows, c0:c0 + cols])

    def init_random(self, gen: torch.Generator, dtype: torch.dtype) -> None:
        """This rank's block, generated in `dtype` one Linear at a time, then stored (quantized) in place."""
        w = torch.empty(sum(self.out_sizes), self.cols[1], dtype=dtype, device=self.weight.device)
        self.scheme.store(self, 0, w.normal_(0.0, 0.02, generator=gen))
        if self.bias is not None:
            self.bias.normal_(0.0, 0.02, generator=gen)

    def forward(self, x, norm=None, add_to=None):
        """`norm` / `add_to` (gemv.Norm / gemv.AddTo): the RMSNorm before this linear, or the residual add after
        it, folded into its GEMV (fused_norms.py: one GPU, so no all-reduce comes between)."""
        if norm is not None or add_to is not None:
            assert add_to is None or self.bias is None
            y = self.scheme.apply_fused(self, x, norm, add_to)
        else:
            y = self.scheme.apply(self, x)
            if self.row_parallel and self.reduce:
                y = parallel.all_reduce(y)
        return y if self.bias is None else y + self.bias


def column_shards(sizes: list[int]) -> list[tuple[int, int]]:
    return [parallel.split(n) for n in sizes]
