"""Seeded generators of hostile inputs: COCO JSON, YOLO labels, ``data.yaml`` and checkpoints.

Each generator writes one case (a dataset folder or a checkpoint file) from a ``random.Random``
and returns the ``rfdetr`` command lines to run on it. Values come from a pool of the inputs that
break parsers (integers past 64 bits, NaN, huge floats, NUL and control characters, deep nesting,
wrong types, paths that escape) mixed into otherwise valid files, so most cases get past the
first check and reach the deeper ones.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from PIL import Image

SIZE = 8  # images are 8x8: the cost of a case is parsing, not pixels

HOSTILE: list[Any] = [
    2**64,
    -(2**63) - 1,
    2**63,
    -1,
    0,
    1e300,
    -1e300,
    1e9,
    float("nan"),
    float("inf"),
    "",
    "\x00",
    "a\nresult: usable\r\x1b[2K",
    "../../outside.png",
    "/etc/passwd",
    None,
    True,
    [],
    {},
    [[]],
    "x" * 300,
    1.5,
    {"size": [SIZE, SIZE], "counts": "o" * 20},
    {"size": [SIZE, SIZE], "counts": [0, 10**12]},
    [[0, 0, 1e9, 0, 0, 1e9]],
    [[1, 1, 6, 1, 1, 6]],
    {"size": [SIZE, SIZE], "counts": "0"},
    "\u202e\ufeff",
]


def hostile(rng: random.Random) -> Any:
    """One value from :data:`HOSTILE`, or a nested list up to 500 deep (stays under the JSON
    encoder's own recursion limit; the reader's limit is tested on its own)."""
    if rng.random() < 0.03:
        value: Any = []
        for _ in range(rng.randint(10, 500)):
            value = [value]
        return value
    return copy.deepcopy(rng.choice(HOSTILE))  # the pool is never mutated in place


def _image(path: Path, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), tuple(rng.randrange(256) for _ in range(3))).save(path)


def valid_coco(split: str) -> dict[str, Any]:
    images = [
        {"id": i, "file_name": f"{split}{i}.png", "width": SIZE, "height": SIZE} for i in (1, 2)
    ]
    annotations = [
        {"id": 10 + i, "image_id": 1 + i % 2, "category_id": 1 + i % 2, "bbox": [1, 1, 4, 4],
         "area": 16, "iscrowd": 0, "segmentation": [[1, 1, 5, 1, 1, 5]]}
        for i in range(3)
    ]  # fmt: skip
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_dataset(root: Path) -> Path:
    """A valid two-class COCO dataset (two black images per split) at ``root``."""
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        data = valid_coco(split)
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
        for image in data["images"]:
            Image.new("RGB", (SIZE, SIZE)).save(root / split / image["file_name"])
    return root


def _mutate(node: Any, rng: random.Random) -> Any:
    """Replace, delete or duplicate one randomly chosen value somewhere in ``node``."""
    if isinstance(node, dict) and node and rng.random() < 0.8:
        key = rng.choice(list(node))
        roll = rng.random()
        if roll < 0.15:
            node.pop(key)
        elif roll < 0.5:
            node[key] = hostile(rng)
        else:
            node[key] = _mutate(node[key], rng)
        return node
    if isinstance(node, list) and node and rng.random() < 0.8:
        index = rng.randrange(len(node))
        roll = rng.random()
        if roll < 0.15:
            node.append(node[index])
        elif roll < 0.5:
            node[index] = hostile(rng)
        else:
            node[index] = _mutate(node[index], rng)
        return node
    return hostile(rng)


def coco_case(root: Path, rng: random.Random) -> list[list[str]]:
    """A COCO dataset whose annotation files carry 0 to 3 mutations each."""
    for split in ("train", "valid"):
        data = valid_coco(split)
        for image in data["images"]:
            _image(root / split / image["file_name"], rng)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            data = _mutate(data, rng)
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return [["validate", str(root)]]


LABEL_TOKENS = ["0", "1", "-1", "1e20", "nan", "inf", "0.5", "1.5", "-0.5", "abc", "1e-300",
                "99999999999999999999", "0x10", "\u0661", "0.2", "0.9", "\x00", "1_0"]  # fmt: skip


def _label_text(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b"0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.1 0.2 0.4\n"
    if rng.random() < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 60)))
    lines = []
    for _ in range(rng.randint(0, 4)):
        count = rng.choice([0, 1, 4, 5, 5, 5, 6, 7, 9])
        lines.append(" ".join(rng.choice(LABEL_TOKENS) for _ in range(count)))
    return "\n".join(lines).encode("utf-8")


def yolo_case(root: Path, rng: random.Random) -> list[list[str]]:
    """A YOLO dataset with random label lines and, sometimes, a hostile ``data.yaml``."""
    root.mkdir(parents=True)
    (root / "data.yaml").write_text(yaml_text(rng) if rng.random() < 0.3 else "names: [a, b]\n")
    for split in ("train", "valid"):
        for i in range(2):
            _image(root / split / "images" / f"{i}.png", rng)
            label = root / split / "labels" / f"{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_bytes(_label_text(rng))
    return [["validate", str(root)]]


def yaml_text(rng: random.Random) -> str:
    """A ``data.yaml`` from hostile pieces: names of every type, aliases, tags, nesting, paths."""
    names = rng.choice([
        "[a, b]", "[[a, b], {x: 1}, null]", "{0: a, 5: b}", "{-1: a}", "{99999999999999999999: a}",
        "[yes, no]", "[1.5]", "*x", "!!python/object:os.system ['true']", "'\\0'", "[" * 500,
        "[" * 50 + "]" * 50, "{a: b}", "\"a\\nb\"", "[a, &x b, *x]", "", "~",
    ])  # fmt: skip
    lines = [f"names: {names}"]
    for key in rng.sample(["nc", "train", "val", "path", "test"], rng.randint(0, 3)):
        value = rng.choice(["2", "-1", "1e400", "images/train", "../x", "/etc", "\"a\\0b\"",
                            "[images/a, images/b]", "list.txt", "{}", "images"])  # fmt: skip
        lines.append(f"{key}: {value}")
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def yaml_case(root: Path, rng: random.Random) -> list[list[str]]:
    """A YOLO dataset (Roboflow or Ultralytics layout) with a hostile ``data.yaml``."""
    yolo_case(root, rng)
    (root / "data.yaml").write_text(yaml_text(rng))
    if rng.random() < 0.5:  # Ultralytics layout: images/<split>, labels/<split>
        for split in ("train", "valid"):
            for kind in ("images", "labels"):
                (root / kind).mkdir(exist_ok=True)
                (root / split / kind).rename(root / kind / split)
            (root / split).rmdir()
    return [["validate", str(root)]]


def _tensor(rng: random.Random) -> Any:
    import torch

    shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
    dtype = rng.choice([torch.float32, torch.float16, torch.int64, torch.bool, torch.uint8])
    tensor = torch.zeros(shape, dtype=dtype)
    if dtype.is_floating_point and tensor.numel() and rng.random() < 0.5:
        tensor.fill_(float("nan"))
    return tensor


def _checkpoint_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return _tensor(rng)
    if roll < 0.5 and depth < 3:
        keys = ["model", "config", "class_names", "args", "epoch", "format", "ema", "x"]
        count = rng.randint(0, 4)
        return {rng.choice(keys): _checkpoint_value(rng, depth + 1) for _ in range(count)}
    if roll < 0.6 and depth < 3:
        return [_checkpoint_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return hostile(rng) if not isinstance(hostile(rng), list) else "x"


def checkpoint_case(root: Path, rng: random.Random, dataset: Path) -> list[list[str]]:
    """A ``torch.save`` of a random nested dict (or raw bytes), for ``export`` and ``eval``."""
    import torch

    root.mkdir(parents=True)
    path = root / "weights.pth"
    if rng.random() < 0.15:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
    else:
        fmt = rng.choice(["rfdetr.checkpoint.v1", "x", 1])
        payload = {"format": fmt, "model": _checkpoint_value(rng)}
        for key in rng.sample(["config", "class_names", "args", "epoch", "ema"], 3):
            payload[key] = _checkpoint_value(rng)
        torch.save(payload, path)
    return [
        ["export", "--weights", str(path), "--output-dir", str(root / "out"), "--no-verify"],
        ["eval", "--weights", str(path), "--dataset-dir", str(dataset), "--device", "cpu"],
    ]
