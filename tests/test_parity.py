"""Data-driven parity with the official code: every case in DICETALK_GOLDEN_DIR must pass.

Each case's JSON drives its check (constructor sizes, call settings, tolerances); the checks live in
``parity_checks/<kind>.py``. Run with ``-s`` to see the max abs error of every compared output.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from golden import discover, golden_dir

CASES = discover()


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    """The cases were made on one CPU thread with deterministic algorithms; run them the same way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)


def test_golden_folder_present():
    if not CASES:
        pytest.skip(
            f"No golden parity cases in {golden_dir()}: set DICETALK_GOLDEN_DIR to a folder of "
            "<case>.json + <case>.safetensors pairs to run the parity suite."
        )
    unknown = [c.name for c in CASES if c.kind == "unknown"]
    assert not unknown, f"cases of an unknown kind: {unknown}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(case):
    if case.kind == "unknown":
        pytest.fail(f"{case.name}: unknown case kind (json 'case' = {case.meta.get('case')!r})")
    check = importlib.import_module(f"parity_checks.{case.kind}").check
    report: dict[str, float] = {}
    check(case, report)
    assert report, f"{case.name}: the check compared nothing"
    worst = max(report.items(), key=lambda kv: kv[1])
    print(f"\n[{case.name}] {len(report)} outputs compared, max abs error {worst[1]:.3g} ({worst[0]})")
