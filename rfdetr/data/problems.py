"""Problems found in a dataset: collected by validation, raised by the loaders.

One parser serves both: validation collects every problem into a :class:`ProblemLog`; the
loaders raise :class:`DatasetError` from it, so ``rfdetr validate`` and training agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rfdetr.errors import UserError, one_line

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]


class DatasetError(UserError, ValueError):
    """A dataset cannot be used. ``str(error)`` is one line: ``path: problem``.

    It survives DataLoader workers: the worker sends only the exception's type and formatted
    traceback, and the main process re-raises ``type(exc)(text)``, or a ``RuntimeError`` when
    that call fails (``torch/_utils.py``, ``ExceptionWrapper.reraise``, as of torch 2.14). Given
    one argument, this class recovers its own one-line message from the last line of that
    traceback, so the CLI and the pipeline see a ``DatasetError`` again. Pickling keeps both
    fields (:meth:`__reduce__`).

    Attributes:
        path: the offending file or folder, as the user would type it.
        problem: what is wrong.
    """

    def __init__(self, path: Path | str, problem: str | None = None) -> None:
        if problem is None:
            path, problem = self._recover(str(path))
        self.path = str(path)
        self.problem = problem
        super().__init__(one_line(f"{path}: {problem}" if path else problem))

    def __reduce__(self) -> tuple[type[DatasetError], tuple[str, str]]:
        return type(self), (self.path, self.problem)

    @classmethod
    def _recover(cls, text: str) -> tuple[str, str]:
        # The path may contain ": ", so the whole recovered line is the problem, the path empty.
        prefix = f"{cls.__module__}.{cls.__qualname__}: "
        for line in reversed(text.splitlines()):
            if line.startswith(prefix):
                return "", line[len(prefix) :]
        lines = text.strip().splitlines()
        return "", lines[-1] if lines else "dataset error"


@dataclass(frozen=True)
class Problem:
    """One problem in a dataset: an ``"error"`` makes it unusable, a ``"warning"`` is fixed up
    on load. ``path`` is the file as the user would type it (``:LINE`` for a YOLO label line)."""

    severity: Severity
    path: str
    message: str

    def __str__(self) -> str:
        return one_line(f"{self.path}: {self.severity}: {self.message}")


@dataclass
class ProblemLog:
    """Collects problems, paths as the user typed them. Control characters are escaped
    (:func:`one_line`) as they are recorded, so no report can be given a forged line."""

    problems: list[Problem] = field(default_factory=list)

    def error(self, path: Path | str, message: str) -> None:
        self.problems.append(Problem("error", one_line(str(path)), one_line(message)))

    def warning(self, path: Path | str, message: str) -> None:
        self.problems.append(Problem("warning", one_line(str(path)), one_line(message)))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def raise_first(self, error: type[DatasetError] = DatasetError) -> None:
        """Raise ``error`` (``path: problem``) for the first error, if any."""
        if self.errors:
            raise error(self.errors[0].path, self.errors[0].message)

    def raise_on_error(self, dataset_root: Path) -> None:
        """Raise :class:`DatasetError` for the first error (pointing to ``rfdetr validate``);
        log warnings once, summarised."""
        errors = self.errors
        if errors:
            more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
            hint = f"; run `rfdetr validate {dataset_root}` for the full list"
            raise DatasetError(errors[0].path, f"{errors[0].message}{more}{hint}")
        warnings = self.warnings
        if warnings:
            logger.warning(
                "%d dataset warning(s), first: %s (run `rfdetr validate` for all)",
                len(warnings),
                warnings[0],
            )
