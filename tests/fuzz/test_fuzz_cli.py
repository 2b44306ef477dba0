"""Fuzz `rfdetr validate`, `validate --deep`, `export` and `eval` with hostile inputs (issue 13).

Seeded cases (:mod:`fuzz_cases`): mutated COCO JSON, random YOLO label lines, hostile ``data.yaml``
files and random ``torch.save`` payloads given as ``--weights``. They run in child processes
(:mod:`driver`) under ``RLIMIT_AS`` and a timeout, and every command must end with exit 0, or
exit 2 and a one-line error: no traceback, no crash, no hang, bounded memory. Seed and size:
``RFDETR_FUZZ_SEED`` (default 0) and ``RFDETR_FUZZ_SCALE`` (default 1; 10 for a longer run).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fuzz_cases import checkpoint_case, coco_case, yaml_case, yolo_case

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
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


def _run_driver(tmp: Path, name: str, argvs: list[list[str]], memory_mb: int, timeout: float):
    cases, results, progress = tmp / f"{name}.json", tmp / f"{name}.out", tmp / f"{name}.at"
    cases.write_text(json.dumps(argvs))
    args = [str(HERE / "driver.py"), str(cases), str(results), str(progress), str(memory_mb)]
    try:
        child = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO), "RFDETR_MAX_IMAGE_PIXELS": "1000000"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        at = int(progress.read_text())
        pytest.fail(f"hang: {name} case {at} {argvs[at]} ran past {timeout:.0f} s")
    if child.returncode != 0:
        at = int(progress.read_text()) if progress.exists() else -1
        pytest.fail(
            f"{name} driver died (code {child.returncode}) at case {at} "
            f"{argvs[at] if at >= 0 else ''}: {child.stderr[-2000:]}"
        )
    return json.loads(results.read_text())


def _problems(result: dict[str, Any]) -> list[str]:
    """What is wrong with how one command ended (empty when it ended well)."""
    output = result["out"] + result["err"]
    if result["traceback"]:
        return [f"escaped main(): {result['traceback'][-1500:]}"]
    found = []
    if result["code"] not in (0, 2):
        found.append(f"exit {result['code']}")
    if "Traceback" in output:
        found.append("traceback in the output")
    if any(not line.isprintable() for line in result["out"].splitlines()):
        found.append("a report line holds a control character")
    command = result["argv"][0]
    if command == "validate":
        last = result["out"].rstrip("\n").rsplit("\n", 1)[-1]
        expected = "result: usable" if result["code"] == 0 else "result: NOT usable"
        if not last.startswith(expected):
            found.append(f"validate ended with {last!r}, exit {result['code']}")
    elif result["code"] == 2:
        errors = [line for line in result["err"].splitlines() if line.startswith("rfdetr ")]
        if len(errors) != 1:
            found.append(f"{len(errors)} error lines: {result['err'][-500:]!r}")
    return found


def _check(results: list[dict[str, Any]]) -> dict[int, int]:
    failures = [(r["argv"], p) for r in results for p in _problems(r)]
    assert not failures, "\n".join(f"{argv}: {problem}" for argv, problem in failures[:10])
    codes: dict[int, int] = {}
    for result in results:
        codes[result["code"]] = codes.get(result["code"], 0) + 1
    return codes


def test_fuzz_dataset_files_with_validate(tmp_path: Path) -> None:
    argvs = _generate(tmp_path, coco_case, 120 * SCALE, SEED)
    argvs += _generate(tmp_path, yolo_case, 100 * SCALE, SEED + 1)
    argvs += _generate(tmp_path, yaml_case, 100 * SCALE, SEED + 2)
    results = _run_driver(tmp_path, "validate", argvs, NO_TORCH_MEMORY_MB, 60.0 * SCALE)
    codes = _check(results)
    print(f"fuzz validate: {len(results)} cases, exit codes {codes}")
    assert len(results) == len(argvs) and codes.get(0) and codes.get(2)  # both outcomes reached


def test_fuzz_checkpoints_with_export_and_eval_and_deep_validate(tmp_path: Path) -> None:
    from fuzz_cases import valid_coco

    dataset = tmp_path / "dataset"
    for split in ("train", "valid"):
        (dataset / split).mkdir(parents=True)
        data = valid_coco(split)
        (dataset / split / "_annotations.coco.json").write_text(json.dumps(data))
        for image in data["images"]:
            from PIL import Image

            Image.new("RGB", (8, 8)).save(dataset / split / image["file_name"])
    argvs = _generate(tmp_path, checkpoint_case, 40 * SCALE, SEED + 3, dataset)
    deep = _generate(tmp_path, coco_case, 30 * SCALE, SEED + 4)
    deep += _generate(tmp_path, yolo_case, 30 * SCALE, SEED + 5)
    argvs += [[*argv, "--deep"] for argv in deep]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    results = _run_driver(tmp_path, "torch", argvs, TORCH_MEMORY_MB, 120.0 * SCALE)
    codes = _check(results)
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(f"fuzz torch: {len(results)} commands, exit codes {codes}, peak {peak_mb:.0f} MB")
    assert peak_mb < RESIDENT_LIMIT_MB
    assert codes.get(2)
