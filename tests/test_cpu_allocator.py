"""``stylegan2_ada.devices.keep_freed_cpu_memory``: after it, a large tensor freed and allocated again
reuses the same pages (no fresh page faults) in the steady state of a repeated training step, which is
what makes CPU training steps cheaper (bench/bench_dp.py --allocator keep|default)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from stylegan2_ada.devices import keep_freed_cpu_memory
applied = keep_freed_cpu_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv2d(32, 1, 3, padding=1)
)
x = torch.randn(16, 8, 128, 128)  # a 32 MiB activation: above glibc's largest mmap threshold
for _ in range(4):  # a training step, four times: the last one shows the steady state
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""


def faults_of_a_fourth_step(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's; elsewhere keep_freed_cpu_memory changes nothing and says so",
)
def test_freed_memory_is_reused_without_page_faults() -> None:
    applied, kept = faults_of_a_fourth_step("keep")
    _, default = faults_of_a_fourth_step("default")
    pages = 32 * 2**20 // 4096  # of the largest activation alone
    assert applied and kept < pages // 10, kept  # the same pages again
    assert default > pages, default  # glibc's default: fresh mappings, faulted in page by page
