"""Host memory bookkeeping of long runs (tsjepa/device.py)."""

import os
import sys

import pytest
import torch

from tsjepa.device import peak_memory_gb, release_freed_host_memory


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_host_memory_goes_back_to_the_os():
    # freeing one big block raises glibc's mmap threshold, so the next ~1 MiB tensors come from the heap, and
    # the heap keeps their pages after they are freed (the last one pins its top)
    big = torch.ones(16 * 2**18)  # 16 MiB
    del big
    blocks = [torch.ones(2**18 + k) for k in range(256)]  # ~256 MiB in ~1 MiB tensors, sizes varying
    last = blocks.pop()
    del blocks
    before = resident_mib()
    assert release_freed_host_memory()
    assert before - resident_mib() > 128, "malloc_trim returned less than half of the freed heap"
    assert last.sum() > 0 and peak_memory_gb(torch.device("cpu")) * 1024 > before - 1  # the peak saw them
