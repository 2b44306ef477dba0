"""Detect a dataset's format (COCO or YOLO) and where its splits live.

The layouts are README.md's "Datasets". COCO wins when both are present (as upstream); the
Roboflow YOLO layout (``train/images/``, paths in ``data.yaml`` ignored) wins over the
Ultralytics one (``train:``/``val:``/``test:`` image folders relative to ``path:`` or the yaml's
folder; labels where the last ``images`` component becomes ``labels``). Lists of folders and
``.txt`` image lists are not supported yet.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfdetr.data.images import escapes_root
from rfdetr.data.problems import DatasetError, ProblemLog
from rfdetr.data.yolo import load_data_yaml

logger = logging.getLogger(__name__)

COCO_ANNOTATION_FILE = "_annotations.coco.json"
YOLO_YAML_NAMES = ("data.yaml", "data.yml")
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val"),
    "test": ("test",),
}
REQUIRED_SPLITS = ("train", "valid")
# Ultralytics data.yaml keys of each split, first match wins.
YAML_SPLIT_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("val", "valid"),
    "test": ("test",),
}


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
        root: the dataset folder as the user typed it (not resolved).
        splits: canonical split name -> split folder (Ultralytics: its images folder).
        yaml_path: the YOLO ``data.yaml``/``data.yml``; None for COCO.
        yolo_split_dirs: YOLO only: split -> ``(images_dir, labels_dir)``.
        yaml_splits: True for the Ultralytics layout (splits named by ``data.yaml`` keys).
    """

    root: Path
    format: DatasetFormat
    splits: dict[str, Path] = field(default_factory=dict)
    yaml_path: Path | None = None
    yolo_split_dirs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    yaml_splits: bool = False

    def split_dir(self, split: str) -> Path:
        """The folder of ``split``. Raises ValueError (unknown name), DatasetError (no folder)."""
        name = canonical_split(split)
        if name not in self.splits:
            if self.yaml_splits and self.yaml_path is not None:
                keys = " or ".join(f"{k}:" for k in YAML_SPLIT_KEYS[name])
                raise DatasetError(self.yaml_path, f"no {name} split (no {keys} key)")
            looked = " or ".join(f"{f}/" for f in SPLIT_FOLDERS[name])
            raise DatasetError(self.root, f"no {name} split (looked for {looked})")
        return self.splits[name]

    def yolo_dirs(self, split: str) -> tuple[Path, Path]:
        """``(images_dir, labels_dir)`` of a YOLO split. Raises ValueError (unknown name, not
        YOLO), DatasetError (no such split)."""
        name = canonical_split(split)
        self.split_dir(name)
        if name not in self.yolo_split_dirs:
            raise ValueError(f"{self.root}: not a YOLO dataset")
        return self.yolo_split_dirs[name]

    def coco_annotation_path(self, split: str) -> Path:
        return self.split_dir(split) / COCO_ANNOTATION_FILE


def canonical_split(split: str) -> str:
    """``train``, ``valid`` or ``test`` (``val`` -> ``valid``); ValueError for other names."""
    for name, folders in SPLIT_FOLDERS.items():
        if split == name or split in folders:
            return name
    raise ValueError(f"unknown split {split!r}; expected one of train, valid (or val), test")


def detect_format(dataset_dir: str | Path) -> DatasetLayout:
    """Detect the format of ``dataset_dir`` (precedence: the module docstring) and list its
    split folders.

    Raises:
        DatasetFormatError: the folder does not exist, or matches no layout (the message says
            what was looked for and what was found), or its ``data.yaml`` is unreadable or names
            folders that are missing, outside the dataset folder or not supported (the message
            names ``data.yaml``, the key and the problem).
    """
    root = Path(dataset_dir)
    if not root.exists():
        if "://" in str(dataset_dir):  # Path("s3://b/x") is "s3:/b/x": name it as typed
            raise DatasetFormatError(str(dataset_dir), "a URI; give a local dataset folder")
        raise DatasetFormatError(root, "no such dataset folder")
    if not root.is_dir():
        raise DatasetFormatError(root, "not a folder; give the dataset folder")
    splits = _split_folders(root)
    # exists(), not is_file(): an unreadable annotation "file" is reported by the reader instead.
    if (root / "train" / COCO_ANNOTATION_FILE).exists():
        return DatasetLayout(root, DatasetFormat.COCO, splits)
    yaml_path = next((root / n for n in YOLO_YAML_NAMES if (root / n).is_file()), None)
    if yaml_path is not None and (root / "train" / "images").is_dir():
        dirs = {name: (folder / "images", folder / "labels") for name, folder in splits.items()}
        return DatasetLayout(root, DatasetFormat.YOLO, splits, yaml_path, dirs)
    if yaml_path is not None:
        log = ProblemLog()
        data = load_data_yaml(yaml_path, log)
        log.raise_first(DatasetFormatError)
        assert data is not None  # None only with an error in the log, raised above
        names_splits = any(key in data for keys in YAML_SPLIT_KEYS.values() for key in keys)
        if names_splits and not _is_roboflow_export_yaml(data):
            dirs = _yaml_split_dirs(root, yaml_path, data)
            images = {name: pair[0] for name, pair in dirs.items()}
            return DatasetLayout(root, DatasetFormat.YOLO, images, yaml_path, dirs, True)
    raise DatasetFormatError(
        root,
        f"no dataset format detected; looked for COCO (train/{COCO_ANNOTATION_FILE}) "
        "and YOLO (data.yaml or data.yml, with train/images/ or with train: and val: image "
        f"folders); found: {_describe(root)}",
    )


def _is_roboflow_export_yaml(data: dict[Any, Any]) -> bool:
    # A Roboflow export's yaml without train/images/ beside it: reported as no format detected.
    train = data.get("train")
    return isinstance(train, str) and train.replace("\\", "/").rstrip("/") == "../train/images"


def _yaml_split_dirs(
    root: Path, yaml_path: Path, data: dict[Any, Any]
) -> dict[str, tuple[Path, Path]]:
    base = _yaml_base(root, yaml_path, data.get("path"))
    dirs: dict[str, tuple[Path, Path]] = {}
    for name, keys in YAML_SPLIT_KEYS.items():
        key = next((k for k in keys if data.get(k) not in (None, "")), None)
        if key is None:
            if name in REQUIRED_SPLITS:
                what, example = ("training", "train") if name == "train" else ("validation", "val")
                raise DatasetFormatError(
                    yaml_path,
                    f"{keys[0]}: missing; name the {what} image folder "
                    f"(e.g. {keys[0]}: images/{example})",
                )
            continue
        value = data[key]
        if isinstance(value, list):
            problem = "a list of image folders is not supported yet; give one image folder"
        elif not isinstance(value, str) or "\x00" in value:
            problem = f"{value!r} is not a folder path"
        elif value.endswith(".txt"):
            problem = (
                f"{value}: a .txt list of image files is not supported yet; give an image folder"
            )
        else:
            images_dir, problem = _folder_in(root, base, value)
            if problem is None:
                dirs[name] = (images_dir, _labels_dir(root, yaml_path, key, value, images_dir))
                continue
            problem = f"{value}: {problem}"
        raise DatasetFormatError(yaml_path, f"{key}: {problem}")
    return dirs


def _yaml_base(root: Path, yaml_path: Path, value: Any) -> Path:
    # Ultralytics' path: is where the author kept the dataset; outside root it means nothing.
    base = yaml_path.parent
    if value in (None, "") or not isinstance(value, str) or "\x00" in value:
        return base
    folder, problem = _folder_in(root, base, value)
    if problem is None:
        return folder
    logger.warning(
        "%s: path: %s is not a folder inside the dataset; split folders are read relative to %s",
        yaml_path,
        value,
        base,
    )
    return base


def _folder_in(root: Path, base: Path, value: str) -> tuple[Path, str | None]:
    """``base / value`` normalised, and why it is not a folder inside ``root`` (or None)."""
    folder = Path(os.path.normpath(base / value))
    if Path(value).is_absolute():
        problem = (
            "absolute paths are not allowed; the dataset folder must be self-contained, so "
            "give a path relative to it"
        )
    elif escapes_root(folder, os.path.realpath(root)):
        problem = "points outside the dataset folder; the dataset folder must be self-contained"
    elif not folder.exists():
        problem = "no such folder"
    elif not folder.is_dir():
        problem = "not a folder"
    else:
        return folder, None
    return folder, problem


def _labels_dir(root: Path, yaml_path: Path, key: str, value: str, images_dir: Path) -> Path:
    parts = list(Path(os.path.relpath(images_dir, os.path.normpath(root))).parts)
    if "images" not in parts:
        raise DatasetFormatError(
            yaml_path,
            f"{key}: {value}: the image folder path has no 'images' component, so its labels "
            "folder cannot be found (expected e.g. images/train with labels/train)",
        )
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return root.joinpath(*parts)


def _split_folders(root: Path) -> dict[str, Path]:
    found = {
        name: [root / f for f in fs if (root / f).is_dir()] for name, fs in SPLIT_FOLDERS.items()
    }
    return {name: dirs[0] for name, dirs in found.items() if dirs}


def _describe(root: Path, limit: int = 12) -> str:
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
