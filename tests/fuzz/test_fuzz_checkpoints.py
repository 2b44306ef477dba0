"""Fuzz every consumer of a checkpoint with mutations of REAL checkpoints (issue 13).

A real 1-epoch ``tiny`` run writes the seeds with the project's own writer; upstream's layouts
are built from its weights (:func:`checkpoint_mutations.make_seeds`). Each case mutates one seed
at the byte level (torch's zip container) or the structure level (the loaded dict, saved again)
and feeds it to one consumer: ``rfdetr export``, ``rfdetr eval``, ``rfdetr train --resume`` (in
a copy of the run folder, where a finished run also reads the best file),
``RFDETRModel.from_checkpoint`` and the pipeline's select step (``select_checkpoint``, through
:func:`rfdetr.checkpoints.select_best`). Cases run in child processes (:mod:`supervisor`), each
with its own timeout, under ``RLIMIT_AS``; every one must end with exit 0, or exit 2 and a
one-line error naming the file: no traceback, no crash, no hang, bounded memory.

Seed and size: ``RFDETR_FUZZ_SEED`` (default 0) and ``RFDETR_FUZZ_SCALE`` (default 1).
"""

from __future__ import annotations

import os
import random
import resource
from pathlib import Path
from typing import Any

from checkpoint_mutations import make_seeds
from fuzz_cases import coco_dataset
from supervisor import check, run_cases

SEED = int(os.environ.get("RFDETR_FUZZ_SEED", "0"))
SCALE = int(os.environ.get("RFDETR_FUZZ_SCALE", "1"))
CASES = 120
TORCH_MEMORY_MB = 6000  # importing torch maps ~4 GB of address space for ~1 GB resident
RESIDENT_LIMIT_MB = 2048
CASE_TIMEOUT_S = 60.0  # a hang, not a slow machine: the first case also pays lazy imports
RUN_OPTIONS = ["--model", "tiny", "--epochs", "1", "--batch-size", "2", "--num-workers", "0",
               "--device", "cpu", "--no-tensorboard", "--no-progress-bar",
               "--no-multi-scale"]  # fmt: skip
TRAINING, BEST = "checkpoint.pth", "checkpoint_best_total.pth"
UPSTREAM = ("upstream.pth", "upstream-legacy.pth", "last.ckpt")


def _train(dataset: Path, out: Path) -> Path:
    from rfdetr.cli import main

    assert main(["train", str(dataset), "--output-dir", str(out), *RUN_OPTIONS]) == 0
    return out


def _mutant(seed: Path, dest: Path, rng: random.Random) -> dict[str, Any]:
    """What :func:`checkpoint_mutations.write_mutant` needs to write ``seed`` mutated at one of
    the two levels as ``dest`` (in the child that then runs the case)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    level = "bytes" if rng.random() < 0.4 else "structure"
    return {"seed": str(seed), "dest": str(dest), "level": level, "draw": rng.randrange(2**32)}


def _resume_case(run: Path, root: Path, dataset: Path, rng: random.Random) -> dict[str, Any]:
    """A copy of the run folder with its training (or, 1 in 4, its best) file mutated."""
    root.mkdir(parents=True)
    target = root / (BEST if rng.random() < 0.25 else TRAINING)
    for file in run.iterdir():
        if file.name != target.name:
            os.link(file, root / file.name)
    argv = ["train", str(dataset), "--output-dir", str(root / "out"), *RUN_OPTIONS,
            "--resume", str(root / TRAINING)]  # fmt: skip
    return {"mutant": _mutant(run / target.name, target, rng), "then": argv}


def _weights_case(
    seeds: dict[str, Path], root: Path, dataset: Path, rng: random.Random
) -> dict[str, Any]:
    """A mutated best (or upstream) file for export, eval, from_checkpoint or select."""
    name = rng.choice([BEST, "checkpoint_best_regular.pth", "checkpoint_best_ema.pth", *UPSTREAM])
    # a successful export (ONNX tracing, ~1-3 s) is the costly outcome and the least telling
    consumer = rng.choices(["export", "eval", "from_checkpoint", "select"], [1, 2, 3.5, 3.5])[0]
    if consumer == "select":  # a run folder: the mutant is one of the two best files
        slot = rng.choice(["checkpoint_best_regular.pth", "checkpoint_best_ema.pth"])
        mutant = _mutant(seeds[name], root / "run" / slot, rng)
        other = ({"checkpoint_best_regular.pth", "checkpoint_best_ema.pth"} - {slot}).pop()
        if rng.random() < 0.7:
            os.link(seeds[other], root / "run" / other)
        call = {"call": "select_checkpoint", "args": [str(root / "run"), str(root / "sel")]}
        return {"mutant": mutant, "then": call}
    path = root / name
    mutant = _mutant(seeds[name], path, rng)
    size = ["--size", "tiny"] if name in UPSTREAM else []
    if consumer == "export":
        then: Any = ["export", "--weights", str(path), "--output-dir", str(root / "onnx"),
                     "--no-verify", *size]  # fmt: skip
    elif consumer == "eval":
        then = ["eval", "--weights", str(path), "--dataset-dir", str(dataset), "--device", "cpu",
                *size]  # fmt: skip
    else:
        then = {"call": "from_checkpoint", "args": [str(path), "tiny" if size else ""]}
    return {"mutant": mutant, "then": then}


def generate(tmp: Path, count: int, seed: int) -> list[Any]:
    """``count`` cases: a real run's files, mutated, each with the consumer that reads it."""
    dataset = coco_dataset(tmp / "dataset")
    run = _train(dataset, tmp / "run")
    seeds = make_seeds(run, tmp / "seeds")
    rng = random.Random(seed)
    cases: list[Any] = []
    for index in range(count):
        root = tmp / f"case{index}"
        if rng.random() < 0.3:
            cases.append(_resume_case(run, root, dataset, rng))
        else:
            cases.append(_weights_case(seeds, root, dataset, rng))
    return cases


def test_fuzz_mutated_real_checkpoints_in_every_consumer(tmp_path: Path) -> None:
    cases = generate(tmp_path, CASES * SCALE, SEED + 10)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    results = run_cases(
        tmp_path, "checkpoints", cases, memory_mb=TORCH_MEMORY_MB, case_timeout=CASE_TIMEOUT_S
    )
    codes = check(results)
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    slowest = max(results, key=lambda r: r["seconds"])
    print(f"fuzz checkpoints: {len(results)} cases, exit codes {codes}, peak {peak_mb:.0f} MB, "
          f"slowest {slowest['seconds']:.1f} s {slowest['argv'][:2]}")  # fmt: skip
    assert len(results) == len(cases)
    for result in results:  # the one error line names the file the case damaged
        lines = [line for line in result["err"].splitlines() if line.startswith("rfdetr ")]
        assert result["code"] == 0 or f"/case{result['index']}/" in lines[0], lines
    assert peak_mb < RESIDENT_LIMIT_MB
    assert codes.get(0) and codes.get(2)  # both outcomes reached
