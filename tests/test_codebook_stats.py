"""Codebook usage / perplexity utilities: known answers, a naive reference, the sliding window, and the all-reduce
across two real gloo processes."""

import math
import multiprocessing

import pytest
import torch
import torch.distributed as dist

from glotok_hf.evaluation import CodebookUsageWindow, code_counts, codebook_perplexity, codebook_usage


def naive_perplexity(indices: list[int], num_codes: int) -> float:
    probs = [indices.count(k) / len(indices) for k in range(num_codes)]
    return math.exp(-sum(p * math.log(p) for p in probs if p > 0))


def test_known_answers():
    assert codebook_usage(torch.tensor([3, 0, 1, 0])) == 0.5
    assert codebook_perplexity(torch.tensor([5, 5, 5, 5])) == pytest.approx(4.0)
    assert codebook_perplexity(torch.tensor([7, 0, 0])) == pytest.approx(1.0)
    assert codebook_perplexity(torch.zeros(3, dtype=torch.long)) == 1.0  # nothing seen yet


def test_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 10, (4, 5, 5), generator=g) ** 2 % 10  # skewed distribution
    counts = code_counts(indices, 10)
    assert counts.tolist() == [indices.flatten().tolist().count(k) for k in range(10)]
    assert codebook_perplexity(counts) == pytest.approx(naive_perplexity(indices.flatten().tolist(), 10), rel=1e-12)
    assert codebook_usage(counts) == len(set(indices.flatten().tolist())) / 10
    with pytest.raises(RuntimeError, match="out of bounds"):  # no silent growth, as bincount would
        code_counts(torch.tensor([10]), 10)


def test_window_slides_over_the_last_steps():
    stats = CodebookUsageWindow(num_codes=4, window=2)
    stats.update(torch.tensor([0, 0]))
    stats.update(torch.tensor([1, 2]))
    assert stats.counts.tolist() == [2, 1, 1, 0] and stats.usage() == 0.75
    stats.update(torch.tensor([3, 3]))  # pushes out the first step
    assert stats.counts.tolist() == [0, 1, 1, 2] and stats.usage() == 0.75
    assert stats.perplexity() == pytest.approx(naive_perplexity([1, 2, 3, 3], 4))
    restored = CodebookUsageWindow(num_codes=4, window=2)
    restored.load_state_dict(stats.state_dict())
    stats.update(torch.tensor([0]))
    restored.update(torch.tensor([0]))
    assert torch.equal(stats.counts, restored.counts)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: CodebookUsageWindow(4, 2).load_state_dict(CodebookUsageWindow(5, 2).state_dict()), "must match"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(RuntimeError, match=match):  # torch's shape error
        call()


def _rank_worker(rank: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        stats = CodebookUsageWindow(num_codes=6, window=3)
        local = torch.tensor([0, 0, 1]) if rank == 0 else torch.tensor([4, 4, 4, 5])
        stats.update(local)
        queue.put((rank, stats.counts.tolist(), stats.usage(), stats.perplexity()))
    finally:
        dist.destroy_process_group()


def test_counts_are_all_reduced_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")  # children inherit the imported modules: no re-import cost
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_worker, args=(r, str(tmp_path / "init"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected_counts = [2, 1, 0, 0, 3, 1]
    for _, counts, usage, perplexity in results:
        assert counts == expected_counts
        assert usage == pytest.approx(4 / 6)
        assert perplexity == pytest.approx(naive_perplexity([0, 0, 1, 4, 4, 4, 5], 6))


def test_counts_follow_the_indices_device_and_are_reduced_there(monkeypatch):
    # "meta" stands in for a GPU: NCCL all-reduces device tensors only, so the counts are reduced where the indices
    # are, and a window without a device keeps its buffer there too (no host copy per update).
    from glotok_hf.evaluation import codebook

    reduced = []
    monkeypatch.setattr(codebook.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(codebook.dist, "all_reduce", lambda tensor, op: reduced.append(tensor.device.type))
    window = CodebookUsageWindow(num_codes=4, window=2)
    window.update(torch.tensor([0, 1, 1], device="meta"))
    assert reduced == ["meta"] and window.counts.device.type == "meta"
    pinned = CodebookUsageWindow(num_codes=4, window=2, device="cpu")
    pinned.update(torch.tensor([0, 1, 1, 3]))
    assert pinned.counts.tolist() == [1, 2, 0, 1] and pinned.counts.device.type == "cpu"
