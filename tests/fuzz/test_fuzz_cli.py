"""Fuzz `rfdetr validate`, `validate --deep`, `export` and `eval` with hostile inputs (issue 13).

Seeded cases (:mod:`fuzz_cases`): mutated COCO JSON, random YOLO label lines, hostile ``data.yaml``
files and random ``torch.save`` payloads given as ``--weights``. They run in child processes
(:mod:`driver`) under ``RLIMIT_AS`` and a timeout, and every command must end with exit 0, or
exit 2 and a one-line error: no traceback, no crash, no hang, bounded memory. Seed and size:
``RFDETR_FUZZ_SEED`` (default 0) and ``RFDETR_FUZZ_SCALE`` (default 1; 10 for a longer run).
"""

from __future__ import annotations

import os
import random
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz_cases import checkpoint_case, coco_case, coco_dataset, yaml_case, yolo_case
from supervisor import check, run_cases

SEED = int(os.environ.get("RFDETR_FUZZ_SEED", "0"))
SCALE = int(os.environ.get("RFDETR_FUZZ_SCALE", "1"))
NO_TORCH_MEMORY_MB = 1500  # validate without --deep imports no torch
TORCH_MEMORY_MB = 6000  # importing torch maps ~4 GB of address space for ~1 GB resident
RESIDENT_LIMIT_MB = 2048


def _generate(
    tmp: Path, make: Callable[..., list[list[str]]], count: int, seed: int, *extra: Any
) -> list[list[str]]:
    rng = random.Random(seed)
    argvs: list[list[str]] = []
    for index in range(count):
        argvs.extend(make(tmp / f"{make.__name__}{index}", rng, *extra))
    return argvs


def test_fuzz_dataset_files_with_validate(tmp_path: Path) -> None:
    argvs = _generate(tmp_path, coco_case, 120 * SCALE, SEED)
    argvs += _generate(tmp_path, yolo_case, 100 * SCALE, SEED + 1)
    argvs += _generate(tmp_path, yaml_case, 100 * SCALE, SEED + 2)
    results = run_cases(tmp_path, "validate", argvs, memory_mb=NO_TORCH_MEMORY_MB, case_timeout=20)
    codes = check(results)
    print(f"fuzz validate: {len(results)} cases, exit codes {codes}")
    assert len(results) == len(argvs) and codes.get(0) and codes.get(2)  # both outcomes reached


def test_fuzz_checkpoints_with_export_and_eval_and_deep_validate(tmp_path: Path) -> None:
    dataset = coco_dataset(tmp_path / "dataset")
    argvs = _generate(tmp_path, checkpoint_case, 40 * SCALE, SEED + 3, dataset)
    deep = _generate(tmp_path, coco_case, 30 * SCALE, SEED + 4)
    deep += _generate(tmp_path, yolo_case, 30 * SCALE, SEED + 5)
    argvs += [[*argv, "--deep"] for argv in deep]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    results = run_cases(tmp_path, "torch", argvs, memory_mb=TORCH_MEMORY_MB, case_timeout=30)
    codes = check(results)
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(f"fuzz torch: {len(results)} commands, exit codes {codes}, peak {peak_mb:.0f} MB")
    assert peak_mb < RESIDENT_LIMIT_MB
    assert codes.get(2)
