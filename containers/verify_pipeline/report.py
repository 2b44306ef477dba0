"""What the run prints: PASS/FAIL lines, the run's summary, the output of failed steps."""

from __future__ import annotations

import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from .common import CheckFailed, say
from .run import Run


@dataclass
class Checks:
    """PASS/FAIL lines of one image's run."""

    label: str
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        """Run ``fn`` (returns a one-line detail); record and print PASS or FAIL."""
        try:
            detail, ok = fn(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # a check must never abort the others
            detail, ok = f"{type(exc).__name__}: {exc}", False
            traceback.print_exc(limit=3, file=sys.stdout)
        self.record(name, ok, detail)
        return ok

    def record(self, name: str, ok: bool, detail: str) -> None:
        """Keep and print one result (the detail wrapped at 110 columns, 25 lines at most)."""
        self.results.append((name, ok, detail))
        lines = [part for line in detail.splitlines() for part in textwrap.wrap(line, 110)]
        lines = lines or [""]
        say(f"{'PASS' if ok else 'FAIL'}  {name:<42} {lines[0]}")
        for line in lines[1:25]:
            say(f"{'':<48} {line}")

    @property
    def failures(self) -> int:
        """How many checks failed."""
        return sum(not ok for _, ok, _ in self.results)


def print_summary(run: Run, listing: list[str]) -> None:
    """Each step container's id, exit code and time; the mAP; the published objects."""
    say(f"-- {run.image}: {len(run.containers)} step containers, {run.seconds:.0f} s in all")
    for record in run.containers:
        seconds = f"{record.seconds:6.1f} s" if record.seconds is not None else "     ? s"
        say(f"   {record.step:<18} {record.id[:12]}  exit {record.exit_code}  {seconds}")
    if "map_50_95" in run.outputs:
        say(f"   mAP50:95 {float(run.outputs['map_50_95']):.4f}")
    for line in listing:
        say(f"   {line}")


def print_failed_output(run: Run) -> None:
    """The last 20 lines of each failed step's output (of kfp.local's log when none failed)."""
    failed = [c for c in run.containers if c.exit_code != 0 and c.log is not None]
    for path in [c.log for c in failed] or [run.log]:
        if path is not None and path.is_file():
            say(f"-- last lines of {path}:")
            for line in path.read_text(errors="replace").splitlines()[-20:]:
                say(f"   {line}")
