"""allocator.keep_freed_memory: freed tensors stay mapped, so a repeated step stops
page-faulting its memory back in (faults counted by the kernel, a fresh process each)."""
import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
from pct_pipeline import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(20):  # one temporary per step, a little larger each time (20-29.5 MiB)
    float(torch.ones(20 * 2**18 + step * 2**17).sum())
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""
PAGES = 20 * 2**20 // 4096  # the smallest temporary in 4 KiB pages


def faults_per_step(mode):
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                         check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_tensor_memory_is_reused_without_page_faults():
    # glibc's defaults: a block larger than any freed so far is mapped afresh (its mmap
    # threshold follows the largest freed block) and unmapped when freed: every page faults
    default = faults_per_step("default")
    assert default > 0.9 * PAGES
    # kept: each block reuses the heap's freed memory, and only where the heap grows faults
    assert faults_per_step("keep") < 0.5 * default
