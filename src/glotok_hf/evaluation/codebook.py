# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Codebook usage and perplexity from code counts, and a sliding-window accumulator that sums the counts of every
process, so the figures logged under DDP describe the global batch and not one rank's shard."""

import torch
import torch.distributed as dist


@torch.no_grad()
def code_counts(indices: torch.Tensor, num_codes: int) -> torch.LongTensor:
    """How often each code occurs in `indices` (any shape, integer values in `[0, num_codes)`): a `(num_codes,)`
    LongTensor on the device of `indices`. A scatter-add, so no device synchronisation (unlike `bincount`); an index
    outside `[0, num_codes)` raises torch's index error (a device-side assert on CUDA)."""
    flat = indices.reshape(-1).long()
    return flat.new_zeros(num_codes).scatter_add_(0, flat, torch.ones_like(flat))


@torch.no_grad()
def codebook_usage(counts: torch.Tensor) -> float:
    """Fraction of codes used at least once, in [0, 1]. `counts`: `(num_codes,)` occurrences of each code."""
    return (counts > 0).double().mean().item()


@torch.no_grad()
def codebook_perplexity(counts: torch.Tensor) -> float:
    r"""Perplexity `exp(H(p))` of the code distribution `p = counts / counts.sum()`, in [1, num_codes]: the effective
    number of codes in use (`num_codes` when all are used equally, 1 when one code takes everything). 0 counts -> 1."""
    total = counts.double().sum()
    return torch.special.entr(counts.double() / total).sum().exp().item() if total > 0 else 1.0  # entr(0) = 0


def codebook_statistics(counts: torch.Tensor) -> dict:
    """`size`, `usage`, `perplexity` and `normalized_perplexity` (perplexity / size) of `(num_codes,)` code counts."""
    perplexity = codebook_perplexity(counts)
    return {
        "size": len(counts),
        "usage": codebook_usage(counts),
        "perplexity": perplexity,
        "normalized_perplexity": perplexity / len(counts),
    }


class CodebookUsageWindow:
    r"""Code counts summed over the last `window` updates and over all processes.

    Each [`update`] bincounts the indices of one step, all-reduces the counts (sum) when `torch.distributed` is
    initialised, and pushes them into a ring buffer of `window` rows, so [`usage`] and [`perplexity`] describe the
    global codes of the last `window` steps on every rank. Every rank must call [`update`] at the same steps.

    Args:
        num_codes (`int`): size of the codebook.
        window (`int`, *optional*, defaults to 100): number of steps the statistics cover.
        device (`torch.device` or `str`, *optional*):
            Where the counts live; by default the device of the first indices given to [`update`] (e.g. the GPU).
        all_reduce (`bool`, *optional*, defaults to `True`): sum the counts across processes when distributed.

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf.evaluation import CodebookUsageWindow
    >>> stats = CodebookUsageWindow(num_codes=4, window=2)
    >>> stats.update(torch.tensor([[0, 0], [1, 1]]))
    >>> stats.usage(), round(stats.perplexity(), 3)
    (0.5, 2.0)
    ```
    """

    def __init__(
        self, num_codes: int, window: int = 100, device: torch.device | str | None = None, all_reduce: bool = True
    ):
        self.num_codes = num_codes
        self.window = window
        self.all_reduce = all_reduce
        self._buffer = torch.zeros(window, num_codes, dtype=torch.long, device=device)
        self._position = 0
        self._follow_indices = device is None

    @torch.no_grad()
    def update(self, indices: torch.Tensor) -> torch.LongTensor:
        """Add the codes of one step (`indices`: integer tensor of any shape). Returns this step's global counts."""
        counts = code_counts(indices, self.num_codes)  # on the indices' device: NCCL reduces device tensors only
        if self.all_reduce and dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        if self._follow_indices:
            self._buffer = self._buffer.to(counts.device)
            self._follow_indices = False
        self._buffer[self._position] = counts.to(self._buffer.device)
        self._position = (self._position + 1) % self.window
        return counts

    @property
    def counts(self) -> torch.LongTensor:
        """`(num_codes,)` counts summed over the window."""
        return self._buffer.sum(0)

    def usage(self) -> float:
        """Fraction of codes used at least once in the window."""
        return codebook_usage(self.counts)

    def perplexity(self) -> float:
        """Perplexity of the code distribution over the window."""
        return codebook_perplexity(self.counts)

    def state_dict(self) -> dict:
        return {"buffer": self._buffer.cpu(), "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self._buffer.copy_(state["buffer"])
        self._position = int(state["position"])


__all__ = ["CodebookUsageWindow", "code_counts", "codebook_perplexity", "codebook_statistics", "codebook_usage"]
