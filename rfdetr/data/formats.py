"""Detect a dataset's format (COCO or YOLO) and where its splits live.

Layouts (the Roboflow export layouts, which upstream RF-DETR also reads):

- COCO: ``train/_annotations.coco.json`` exists; each split folder holds its annotation file and
  its images (``file_name`` is relative to the split folder).
- YOLO: ``data.yaml`` (or ``data.yml``) exists and so does ``train/images/``; each split folder
  holds ``images/`` and ``labels/`` (one ``.txt`` per image, same relative path and stem).

Splits are ``train``, ``valid`` (a ``val`` folder is accepted too) and an optional ``test``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from rfdetr.data.problems import DatasetError

COCO_ANNOTATION_FILE = "_annotations.coco.json"
YOLO_YAML_NAMES = ("data.yaml", "data.yml")
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val"),
    "test": ("test",),
}
REQUIRED_SPLITS = ("train", "valid")


class DatasetFormat(str, enum.Enum):
    """The on-disk annotation format."""

    COCO = "coco"
    YOLO = "yolo"


class DatasetFormatError(DatasetError):
    """The folder is neither a COCO nor a YOLO dataset (or does not exist)."""


@dataclass(frozen=True)
class DatasetLayout:
    """Where a detected dataset keeps its files.

    Attributes:
        root: the dataset folder as given by the user (not resolved, so messages show it as typed).
        format: COCO or YOLO.
        splits: canonical split name (``train``/``valid``/``test``) -> split folder, for the
            split folders that exist.
        yaml_path: the YOLO ``data.yaml``/``data.yml``; None for COCO.
    """

    root: Path
    format: DatasetFormat
    splits: dict[str, Path] = field(default_factory=dict)
    yaml_path: Path | None = None

    def split_dir(self, split: str) -> Path:
        """The folder of ``split`` (``val`` and ``valid`` are the same split).

        Raises:
            ValueError: the split name is unknown.
        DatasetError: the split has no folder.
        """
        name = canonical_split(split)
        if name not in self.splits:
            looked = " or ".join(f"{f}/" for f in SPLIT_FOLDERS[name])
            raise DatasetError(self.root, f"no {name} split (looked for {looked})")
        return self.splits[name]

    def coco_annotation_path(self, split: str) -> Path:
        """``<split>/_annotations.coco.json``."""
        return self.split_dir(split) / COCO_ANNOTATION_FILE


def canonical_split(split: str) -> str:
    """Map a split name to ``train``, ``valid`` or ``test`` (``val`` -> ``valid``).

    Raises:
        ValueError: the name is none of those.
    """
    for name, folders in SPLIT_FOLDERS.items():
        if split == name or split in folders:
            return name
    raise ValueError(f"unknown split {split!r}; expected one of train, valid (or val), test")


def detect_format(dataset_dir: str | Path) -> DatasetLayout:
    """Detect the format of ``dataset_dir`` and list its split folders.

    COCO wins when both layouts are present, as upstream does.

    Raises:
        DatasetFormatError: the folder does not exist, or matches neither layout; the message says
            what was looked for and what was found.
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise DatasetFormatError(root, "no such dataset folder")
    if not root.is_dir():
        raise DatasetFormatError(root, "not a folder; give the dataset folder")
    splits = _split_folders(root)
    # exists(), not is_file(): an unreadable annotation "file" is reported by the reader instead.
    if (root / "train" / COCO_ANNOTATION_FILE).exists():
        return DatasetLayout(root, DatasetFormat.COCO, splits)
    yaml_path = next((root / n for n in YOLO_YAML_NAMES if (root / n).is_file()), None)
    if yaml_path is not None and (root / "train" / "images").is_dir():
        return DatasetLayout(root, DatasetFormat.YOLO, splits, yaml_path)
    raise DatasetFormatError(
        root,
        f"no dataset format detected; looked for COCO (train/{COCO_ANNOTATION_FILE}) "
        f"and YOLO (data.yaml or data.yml, with train/images/); found: {_describe(root)}",
    )


def _split_folders(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name, folders in SPLIT_FOLDERS.items():
        for folder in folders:
            if (root / folder).is_dir():
                found[name] = root / folder
                break
    return found


def _describe(root: Path, limit: int = 12) -> str:
    """A short listing of what the folder holds, so a wrong path is obvious from the error."""
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    if not entries:
        return "an empty folder"
    shown = []
    for entry in entries[:limit]:
        if entry.is_dir():
            try:
                inner = sorted(p.name for p in entry.iterdir())[:4]
            except OSError:
                inner = ["unreadable"]
            shown.append(f"{entry.name}/ ({', '.join(inner) or 'empty'})")
        else:
            shown.append(entry.name)
    more = f", and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(shown) + more
