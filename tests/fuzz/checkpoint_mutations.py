"""Seeded mutations of REAL checkpoints: the bytes of torch's zip container, and the saved dict.

The seeds are files the project's own writer made in a real (1-epoch, ``tiny``) run
(:func:`make_seeds`): ``checkpoint.pth`` (resumable), ``checkpoint_best_total.pth``, the best
regular/EMA files, plus upstream's layouts built from the same weights (1.11's dict ``args`` and
``model_config``; 1.4's pickled ``argparse.Namespace``; Lightning's ``state_dict``). Two levels:

- :func:`mutate_bytes`: flip, truncate, insert or delete bytes in one region of the zip file
  (local headers, ``data.pkl``, ``byteorder``, ``version``, a tensor storage, the central
  directory), or rewrite one member with a valid CRC (a damaged pickle stream, a foreign byte
  order or version record, a short or missing storage) so the damage reaches the unpickler.
- :func:`mutate_structure`: load the dict, then drop or rename keys, change tensors (dtype,
  0-dim, wrong shape, a huge shape declared over one element, NaN/inf, sparse, non-tensors), set
  config fields to wrong types or out-of-bound values, break the class names, the head size, the
  epoch, metrics and optimizer state, and save it again with ``torch.save``.
"""

from __future__ import annotations

import argparse
import copy
import io
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from fuzz_cases import hostile

RUN_FILES = ("checkpoint.pth", "checkpoint_best_total.pth", "checkpoint_best_regular.pth",
             "checkpoint_best_ema.pth")  # fmt: skip
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


def zip_regions(data: bytes) -> dict[str, tuple[int, int]]:
    """``name -> (start, end)`` of each member's payload, each local header, and the central
    directory of a zip file (what :func:`mutate_bytes` aims at)."""
    regions: dict[str, tuple[int, int]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    for info in infos:
        start = info.header_offset
        name_len, extra_len = struct.unpack("<HH", data[start + 26 : start + 30])
        payload = start + _LOCAL_HEADER + name_len + extra_len
        regions[f"header:{info.filename}"] = (start, payload)
        regions[info.filename.split("/", 1)[-1]] = (payload, payload + info.compress_size)
    directory = max(end for _, end in regions.values())
    regions["central-directory"] = (directory, len(data))
    return regions


def _damage(blob: bytes, rng: random.Random) -> bytes:
    """``blob`` with bytes flipped, cut, inserted or removed (never the same length and bytes)."""
    data = bytearray(blob)
    roll = rng.random()
    at = rng.randrange(len(data) + 1)
    if roll < 0.4 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif roll < 0.6:
        del data[at:]
    elif roll < 0.8:
        data[at:at] = rng.choice([rng.randbytes(rng.randint(1, 64)), b"\x00" * 4096, b"\xff" * 8])
    else:
        del data[at : at + rng.randint(1, 256)]
    return bytes(data)


def _pickle_edit(blob: bytes, rng: random.Random) -> bytes:
    """A pickle stream edited at the opcode level: a foreign global, an early STOP, a
    recursion of MARKs, a huge LONG, or plain damage."""
    at = rng.randrange(1, len(blob))
    pieces = [
        b"cbuiltins\neval\n(S'1'\ntR",  # a global outside the allow-list
        b"cposix\nsystem\n(S'true'\ntR",
        b".",  # STOP in the middle
        b"(" * 100_000,  # 100k MARKs
        b"\x8a\x08" + b"\xff" * 8,  # LONG1 of 8 bytes
        b"J\xff\xff\xff\x7f",  # BININT 2**31-1
        b"\x95" + b"\xff" * 8,  # FRAME of 2**64-1 bytes
    ]
    if rng.random() < 0.3:
        return _damage(blob, rng)
    return blob[:at] + rng.choice(pieces) + blob[at:]


def _rewrite_member(data: bytes, rng: random.Random) -> bytes:
    """The zip rewritten with one member changed, dropped or added, CRCs valid."""
    source = zipfile.ZipFile(io.BytesIO(data))
    members = {info.filename: source.read(info) for info in source.infolist()}
    prefix = next(iter(members)).split("/", 1)[0]
    name = rng.choice(list(members))
    short = name.split("/", 1)[-1]
    roll = rng.random()
    if short == "data.pkl" or roll < 0.3:
        name = f"{prefix}/data.pkl"
        members[name] = _pickle_edit(members[name], rng)
    elif short in ("byteorder", "version", ".data/version") and roll < 0.8:
        members[name] = rng.choice([b"big", b"middle", b"", b"99", b"-1", b"x" * 1000, b"\x00"])
    elif roll < 0.5:
        members[name] = _damage(members[name], rng)
    elif roll < 0.7:
        members.pop(name)
    elif roll < 0.85:
        members[f"{prefix}/data/99999"] = rng.randbytes(rng.randint(0, 64))
    else:
        members[name] = members[name] * rng.randint(2, 4)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for member, payload in members.items():
            archive.writestr(member, payload)
    return out.getvalue()


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One byte-level mutation of a ``torch.save`` zip file (see the module docstring)."""
    if rng.random() < 0.45:
        return _rewrite_member(data, rng)
    regions = zip_regions(data)
    # the small records are picked as often as the large storages
    name = rng.choice(sorted(regions))
    start, end = regions[name]
    return data[:start] + _damage(data[start:end], rng) + data[end:]


def _tensor_mutation(tensor: torch.Tensor, rng: random.Random) -> Any:
    """A changed copy of ``tensor``, or something that is not a tensor."""
    roll = rng.randrange(12)
    if roll == 0:
        dtype = rng.choice([torch.int64, torch.int8, torch.uint8, torch.bool, torch.float16,
                            torch.bfloat16, torch.float64, torch.complex64])  # fmt: skip
        return tensor.to(dtype)
    if roll == 1:
        return torch.tensor(1.0)  # 0-dim
    if roll == 2:
        return tensor.flatten()[: max(tensor.numel() - 1, 0)]
    if roll == 3:  # a huge shape declared over one stored element (stride 0)
        return torch.zeros(1).expand(*rng.choice([(10**6, 10**6), (2**31,), (1, 2**40)]))
    if roll == 4:
        return tensor.clone().fill_(rng.choice([float("nan"), float("inf"), -float("inf")]))
    if roll == 5:
        return torch.zeros(0)
    if roll == 6:
        return tensor.reshape(-1).to_sparse() if tensor.numel() else tensor
    if roll == 7:
        return tensor.unsqueeze(0).repeat(2, *([1] * tensor.ndim))
    if roll == 8:
        return torch.empty(tensor.shape, device="meta")
    return hostile(rng)


def _pick(node: dict[Any, Any] | list[Any], rng: random.Random) -> Any:
    return rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))


def _mutate_mapping(node: dict[Any, Any], rng: random.Random, depth: int = 0) -> None:
    """Change one entry of ``node`` (or, at random, one level below it)."""
    if not node:
        node["x"] = hostile(rng)
        return
    key = _pick(node, rng)
    value = node[key]
    roll = rng.random()
    if isinstance(value, torch.Tensor) and roll < 0.75:  # a state dict: mostly its tensors
        node[key] = _tensor_mutation(value, rng)
    elif isinstance(value, (dict, list)) and value and depth < 4 and roll < 0.55:
        if isinstance(value, dict):
            _mutate_mapping(value, rng, depth + 1)
        else:
            index = _pick(value, rng)
            value[index] = (
                _tensor_mutation(value[index], rng)
                if isinstance(value[index], torch.Tensor)
                else hostile(rng)
            )
    elif roll < 0.65:
        node.pop(key)
    elif roll < 0.75:
        node[rng.choice([f"module.{key}", f"{key}_", 7, "", "model.x"])] = node.pop(key)
    elif isinstance(value, torch.Tensor):
        node[key] = _tensor_mutation(value, rng)
    else:
        node[key] = hostile(rng)


_TARGETS = ("model", "ema", "config", "class_names", "epoch", "metrics", "optimizer",
            "scheduler", "args", "model_config", "state_dict", "rng", "trackers", "format",
            "global_step", "scaler", "model_name")  # fmt: skip


def _head_resize(raw: dict[str, Any], rng: random.Random) -> None:
    """``num_classes`` in the config that disagrees with the class head, or the reverse."""
    weights = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    head = weights.get("class_embed.bias")
    if rng.random() < 0.5 and isinstance(head, torch.Tensor):
        rows = rng.choice([0, 1, head.shape[0] + 5])
        weights["class_embed.bias"] = torch.zeros(rows)
        weights["class_embed.weight"] = torch.zeros(rows, weights["class_embed.weight"].shape[1])
    else:
        config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        model = config.get("model", config) if isinstance(config.get("model"), dict) else config
        model["num_classes"] = rng.choice([0, -1, 1, 90, 10**9, 2.5, "2", None, True])


def mutate_structure(raw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """1 to 3 changes to a loaded checkpoint dict (in place), returned for ``torch.save``."""
    for _ in range(rng.choice([1, 1, 2, 3])):
        roll = rng.random()
        present = [key for key in _TARGETS if key in raw]
        if roll < 0.12:
            _head_resize(raw, rng)
        elif roll < 0.2:
            raw["class_names"] = rng.choice([
                [1, 2], {"0": "cat", "x": "dog"}, [["a"], {"b": 1}], "catdog", ["a\nb", "c"] * 50,
                ["x" * 10**6], [None, None], {}, list(range(10**5)),
            ])  # fmt: skip
        elif roll < 0.3 and present:
            raw[rng.choice(present)] = hostile(rng)
        elif roll < 0.36 and present:
            raw.pop(rng.choice(present))
        else:
            target = raw.get(rng.choice(present)) if present else raw
            if isinstance(target, dict):
                _mutate_mapping(target, rng)
            elif isinstance(target, argparse.Namespace):
                _mutate_mapping(vars(target), rng)
            else:
                _mutate_mapping(raw, rng)
    return raw


_LOADED: dict[str, dict[str, Any]] = {}


def write_mutant(seed: str, dest: str, level: str, draw: int) -> None:
    """Write ``seed`` mutated at ``level`` (``bytes`` or ``structure``) with ``Random(draw)``."""
    rng = random.Random(draw)
    if level == "bytes":
        Path(dest).write_bytes(mutate_bytes(Path(seed).read_bytes(), rng))
        return
    if seed not in _LOADED:  # a seed is loaded once per process, then copied
        _LOADED[seed] = load_seed(Path(seed))
    torch.save(mutate_structure(copy.deepcopy(_LOADED[seed]), rng), dest)


def load_seed(path: Path) -> dict[str, Any]:
    """A seed checkpoint as a dict (its Namespace ``args`` included)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def make_seeds(run: Path, dest: Path) -> dict[str, Path]:
    """The run's files, plus upstream's three layouts made from its best weights."""
    best = load_seed(run / "checkpoint_best_total.pth")
    names = list(best["class_names"])
    model = best["config"]["model"]
    args = {**best["args"], "class_names": names, "num_classes": model["num_classes"]}
    upstream = {"model": best["model"], "args": args, "model_config": best["model_config"],
                "rfdetr_version": "1.11.2", "epoch": 0}  # fmt: skip
    legacy = {"model": best["model"], "args": argparse.Namespace(**args), "epoch": 0}
    lightning = {"state_dict": {f"model.{k}": v for k, v in best["model"].items()},
                 "hyper_parameters": args, "epoch": 0, "global_step": 1}  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    seeds = {name: run / name for name in RUN_FILES}
    for name, payload in (("upstream.pth", upstream), ("upstream-legacy.pth", legacy),
                          ("last.ckpt", lightning)):  # fmt: skip
        torch.save(payload, dest / name)
        seeds[name] = dest / name
    return seeds
