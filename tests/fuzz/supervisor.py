"""Run fuzz cases in child processes (:mod:`driver`) and judge how each ended.

:func:`run_cases` splits the cases into shards, one child process per shard at a time, all
shards at once. Each child runs its cases one after another under ``RLIMIT_AS``; a case that
runs past its own timeout is a hang (the child is killed), a child that dies is a crash of the
case it was running; either way the finding is recorded and a new child continues with the next
case. :func:`problems` says what is wrong with one result: anything but exit 0, or exit 2 with
a one-line ``rfdetr ...`` error; a traceback; a control character in the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POLL_S = 0.05


class _Shard:
    """One child process working through ``cases``, restarted after a crash or a hang."""

    def __init__(self, folder: Path, cases: list[Any], memory_mb: int, timeout: float) -> None:
        self.cases, self.memory_mb, self.timeout = cases, memory_mb, timeout
        self.cases_file, self.results = folder / "cases.json", folder / "results.jsonl"
        self.progress, self.log = folder / "at", folder / "stderr"
        folder.mkdir(parents=True)
        self.cases_file.write_text(json.dumps(cases))
        self.extra: list[dict[str, Any]] = []  # crashes and hangs, found by this parent
        self.child: subprocess.Popen[bytes] | None = None
        self.running, self.since = -1, 0.0
        self.next = 0

    def _start(self) -> None:
        self.progress.unlink(missing_ok=True)
        args = [str(HERE / "driver.py"), str(self.cases_file), str(self.results),
                str(self.progress), str(self.memory_mb), str(self.next)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}",
               "RFDETR_MAX_IMAGE_PIXELS": "1000000"}  # fmt: skip
        with open(self.log, "ab") as log:
            self.child = subprocess.Popen([sys.executable, *args], stdout=log, stderr=log, env=env)
        self.running, self.since = -1, time.monotonic()

    def _finding(self, kind: str, index: int, detail: str) -> None:
        argv = self.cases[index]
        argv = argv["then"] if isinstance(argv, dict) and "then" in argv else argv
        argv = [argv["call"], *argv["args"]] if isinstance(argv, dict) else argv
        self.extra.append({"index": index, "argv": argv, "code": None, "out": "", "err": "",
                           "traceback": "", kind: detail, "seconds": self.timeout})  # fmt: skip
        self.next = index + 1

    def step(self) -> bool:
        """Advance: start, watch or restart the child. False once every case has ended."""
        if self.child is None:
            if self.next >= len(self.cases):
                return False
            self._start()
            return True
        now = time.monotonic()
        text = self.progress.read_text() if self.progress.exists() else ""
        if text.strip() and int(text) != self.running:
            self.running, self.since = int(text), now
        code = self.child.poll()
        if code is None:
            if self.running >= 0 and now - self.since > self.timeout:
                self.child.kill()
                self.child.wait()
                self._finding("hang", self.running, f"ran past {self.timeout:.0f} s")
                self.child = None
            return True
        self.child = None
        if code == 0:
            self.next = len(self.cases)
        else:  # the case it was running took the process down
            tail = self.log.read_text(errors="replace")[-1500:]
            at = self.running if self.running >= 0 else self.next
            self._finding("crash", at, f"exit {code}: {tail}")
        return True

    def records(self) -> list[dict[str, Any]]:
        lines = self.results.read_text().splitlines() if self.results.exists() else []
        return [json.loads(line) for line in lines] + self.extra


def run_cases(
    tmp: Path, name: str, cases: list[Any], *, memory_mb: int, case_timeout: float,
    shards: int = 2, total_timeout: float = 600.0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every case's result (see :mod:`driver`), crashes and hangs included, in case order."""
    parts = [_Shard(tmp / f"{name}-{i}", cases[i::shards], memory_mb, case_timeout)
             for i in range(shards)]  # fmt: skip
    deadline = time.monotonic() + total_timeout
    while any([part.step() for part in parts]):
        if time.monotonic() > deadline:
            for part in parts:
                if part.child is not None:
                    part.child.kill()
            raise AssertionError(f"{name}: the fuzz ran past {total_timeout:.0f} s")
        time.sleep(POLL_S)
    results = []
    for shard, part in enumerate(parts):
        for record in part.records():
            record["index"] = record["index"] * shards + shard
            results.append(record)
    return sorted(results, key=lambda r: r["index"])


def problems(result: dict[str, Any]) -> list[str]:
    """What is wrong with how one case ended (empty when it ended well)."""
    if result.get("crash") or result.get("hang"):
        return [f"{'crash' if result.get('crash') else 'hang'}: "
                f"{result.get('crash') or result.get('hang')}"]  # fmt: skip
    if result["traceback"]:
        return [f"escaped: {result['traceback'][-1500:]}"]
    output = result["out"] + result["err"]
    found = []
    if result["code"] not in (0, 2):
        found.append(f"exit {result['code']}")
    if "Traceback" in output:
        found.append("traceback in the output")
    if any(not line.isprintable() for line in result["out"].splitlines()):
        found.append("a report line holds a control character")
    if result["argv"][0] == "validate":
        last = result["out"].rstrip("\n").rsplit("\n", 1)[-1]
        expected = "result: usable" if result["code"] == 0 else "result: NOT usable"
        if not last.startswith(expected):
            found.append(f"validate ended with {last!r}, exit {result['code']}")
    elif result["code"] == 2:
        errors = [line for line in result["err"].splitlines() if line.startswith("rfdetr ")]
        if len(errors) != 1:
            found.append(f"{len(errors)} error lines: {result['err'][-500:]!r}")
    return found


def check(results: list[dict[str, Any]]) -> dict[int | None, int]:
    """Fail with the first findings; else the count of each exit code."""
    failures = [(r["argv"], p) for r in results for p in problems(r)]
    assert not failures, "\n".join(f"{argv}: {problem}" for argv, problem in failures[:10])
    codes: dict[int | None, int] = {}
    for result in results:
        codes[result["code"]] = codes.get(result["code"], 0) + 1
    return codes
