"""Read and check a YOLO dataset: ``data.yaml`` and the per-image label files.

A label file has one object per line: ``class cx cy w h`` (a box, normalised to [0, 1]) or
``class x1 y1 x2 y2 x3 y3 ...`` (a polygon, normalised). A missing or empty label file means the
image has no objects. Label files are parsed when an item is loaded, never all kept in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rfdetr.data.classes import ClassMap, too_many_classes
from rfdetr.data.images import check_inside, list_images, open_regular
from rfdetr.data.problems import DatasetError, ProblemLog

# Exporters write values like 1.0000001; anything further out of [0, 1] is a real mistake.
RANGE_TOLERANCE = 1e-6
# A box whose edge passes the border by less than this (normalised) is not worth a warning.
OVERHANG_TOLERANCE = 1e-4
# A data file is a few lines; anything this big is not one (and is not parsed).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_EVENTS = 50_000
# Class ids are stored as int64 and used as indices: keep them well inside.
MAX_CLASS_ID = 2**31 - 1


@dataclass
class YoloLabels:
    """The objects of one label file.

    Attributes:
        class_ids: int64 ``[N]`` class ids as written (the dataset's ids).
        boxes: float64 ``[N, 4]`` normalised ``cx, cy, w, h`` (for polygons: their extent).
        polygons: ``[N]`` flat normalised ``[x1, y1, x2, y2, ...]`` arrays, None for box lines.
    """

    class_ids: np.ndarray
    boxes: np.ndarray
    polygons: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass
class YoloSplitFiles:
    """The files of one split: ``images_dir/**`` (listed when built; none when the folder is
    missing) and the matching ``labels_dir/**.txt``."""

    images_dir: Path
    labels_dir: Path
    images: list[Path] = field(init=False)
    linked_dirs: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.images, self.linked_dirs = list_images(self.images_dir)

    def label_path(self, image: Path) -> Path:
        relative = image.relative_to(self.images_dir)
        return self.labels_dir / relative.with_suffix(".txt")


def orphan_labels(files: YoloSplitFiles) -> list[Path]:
    """Label files with no image of the same stem (usually a renamed or deleted image)."""
    if not files.labels_dir.is_dir():
        return []
    expected = {files.label_path(image) for image in files.images}
    orphans = []
    for dirpath, _dirs, names in os.walk(files.labels_dir):
        base = Path(dirpath)
        orphans.extend(base / n for n in names if n.endswith(".txt") and base / n not in expected)
    return sorted(orphans)


def read_data_yaml(yaml_path: Path, log: ProblemLog) -> ClassMap | None:
    """Class names from ``data.yaml`` (``names`` a list or an ``{id: name}`` mapping, ``nc``
    their count when present); problems go to ``log``; None when unusable."""
    data = load_data_yaml(yaml_path, log)
    if data is None:
        return None
    names, nc = data.get("names"), data.get("nc")
    problem = _names_problem(names)
    if problem:
        log.error(yaml_path, f"names: {problem}")
    elif nc is not None and nc != len(names):
        log.error(yaml_path, f"nc is {nc!r} but names lists {len(names)} classes")
    else:
        return ClassMap.from_yolo_names(names)
    return None


class _RefusedYaml(Exception):
    """A data file refused before it is built into Python objects."""


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` after one pass over the parser's events refusing aliases (nested ones
    expand a few hundred bytes into gigabytes) and more than :data:`MAX_YAML_EVENTS` nodes."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for count, event in enumerate(yaml.parse(text, Loader=loader)):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise _RefusedYaml(f"YAML alias *{event.anchor} at line {line} is not allowed")
        if count > MAX_YAML_EVENTS:
            raise _RefusedYaml(f"more than {MAX_YAML_EVENTS} YAML nodes; not a data file")
    return yaml.load(text, Loader=loader)


def load_data_yaml(yaml_path: Path, log: ProblemLog) -> dict[Any, Any] | None:
    """The mapping in ``data.yaml`` (a regular file of at most :data:`MAX_YAML_BYTES`, parsed by
    :func:`_parse_yaml`); problems go to ``log``; None when unusable."""
    try:
        with open_regular(yaml_path) as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise _RefusedYaml(f"data file is larger than {MAX_YAML_BYTES} bytes")
        data = _parse_yaml(raw.decode("utf-8"))
    except FileNotFoundError:
        problem = "data file is missing"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text ({exc.reason})"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = f"malformed YAML{where}: {getattr(exc, 'problem', None) or exc}"
    except RecursionError:
        problem = "malformed YAML: nested too deeply"
    except _RefusedYaml as exc:
        problem = str(exc)
    except OSError as exc:
        problem = f"cannot read data file ({exc.strerror or exc})"
    else:
        if isinstance(data, dict):
            return data
        problem = "must be a YAML mapping with a 'names' entry"
    log.error(yaml_path, problem)
    return None


def _names_problem(names: Any) -> str | None:
    if isinstance(names, Mapping):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            return "the keys of a names mapping must be integer class ids"
    elif not isinstance(names, list):
        return "must be a list of class names or a {id: name} mapping"
    pairs = list(names.items()) if isinstance(names, Mapping) else list(enumerate(names))
    if not pairs:
        return "no classes declared"
    too_many = too_many_classes(len(pairs))
    if too_many:
        return too_many
    for class_id, name in pairs:
        if not 0 <= class_id <= MAX_CLASS_ID:
            return f"class id {class_id} is out of range (0..{MAX_CLASS_ID})"
        # bool first: YAML 1.1 reads an unquoted yes/no/on/off as a bool, an int subclass.
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            return (
                f"class {class_id} is {name!r}, not a name; write class names as text "
                "(quote names like yes, no, null or 1.5)"
            )
        if isinstance(name, str) and not name.isprintable():
            return f"class {class_id} name {name!r} has control characters"
    return None


def parse_label_file(
    path: Path, class_map: ClassMap | None, log: ProblemLog, root_real: str
) -> YoloLabels:
    """Parse and check one label file; problems go to ``log`` as ``path:LINE``, lines with
    errors are left out. A missing file means no objects. With no ``class_map`` class ids are
    not checked; a file that resolves outside ``root_real`` is refused unread."""
    try:
        check_inside(path, root_real, "label file")
        with open_regular(path) as handle:
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        text = ""
    except DatasetError as exc:
        log.error(exc.path, exc.problem)
        text = ""
    except UnicodeDecodeError as exc:
        log.error(path, f"label file is not UTF-8 text ({exc.reason})")
        text = ""
    except OSError as exc:
        log.error(path, f"cannot read label file ({exc.strerror or exc})")
        text = ""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        parsed = _parse_line(tokens, class_map) if tokens else None
        if isinstance(parsed, str):
            log.error(f"{path}:{number}", parsed)
        elif parsed is not None:
            if parsed[3]:
                log.warning(f"{path}:{number}", "box extends outside the image; it is clipped")
            rows.append(parsed[:3])
    class_ids, boxes, polygons = zip(*rows, strict=True) if rows else ((), (), ())
    return YoloLabels(
        np.asarray(class_ids, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        list(polygons),
    )


def _parse_line(
    tokens: list[str], class_map: ClassMap | None
) -> str | tuple[int, tuple[float, float, float, float], np.ndarray | None, bool]:
    """``(class_id, cxcywh, polygon or None, overhangs)`` or the reason the line is wrong."""
    count = len(tokens)
    if count != 5 and (count < 7 or count % 2 == 0):
        return (
            f"{count} values; expected 5 (class cx cy w h) "
            "or a class and 3 or more x y pairs (polygon)"
        )
    numbers = []
    for token in tokens:
        try:
            numbers.append(float(token))
        except ValueError:
            return f"value {token!r} is not a number"
    class_value, values = numbers[0], numbers[1:]
    if not math.isfinite(class_value) or class_value != int(class_value):
        return f"class id {tokens[0]!r} is not an integer"
    if not 0 <= class_value <= MAX_CLASS_ID:
        return f"class id {tokens[0]!r} is out of range (0..{MAX_CLASS_ID})"
    class_id = int(class_value)
    if class_map is not None and not class_map.has_source_id(class_id):
        return f"class id {class_id} is not declared in the names of the data file"
    if not all(map(math.isfinite, values)):
        return "a coordinate is not a finite number"
    low, high = min(values), max(values)
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        bad_value = low if low < -RANGE_TOLERANCE else high
        return f"value {bad_value:g} is outside [0, 1]; YOLO coordinates are normalised"
    if count == 5:
        cx, cy, w, h = values
        if w <= 0 or h <= 0:
            return "box has zero or negative size"
        tol = OVERHANG_TOLERANCE
        overhang = min(cx - w / 2, cy - h / 2) < -tol or max(cx + w / 2, cy + h / 2) > 1 + tol
        return class_id, (cx, cy, w, h), None, overhang
    polygon = np.asarray(values, dtype=np.float64)
    xs, ys = polygon[0::2], polygon[1::2]
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    if x2 <= x1 or y2 <= y1:
        return "polygon has zero width or height"
    return class_id, ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), polygon, False
