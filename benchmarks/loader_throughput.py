"""Training DataLoader throughput: ours vs upstream rfdetr 1.11.2, per worker count, interleaved.

Both sides load the same COCO folder as their training does for Nano at 384 with multi-scale
(each image resized to the largest scale, 544 with the expanded scales; the per-batch rescale
happens later, in the step, on both sides), batch 4, shuffled, augmented (flip, resize or
resize-crop-resize, normalise). Ours: :func:`rfdetr.data.build_dataset` and
:class:`rfdetr.data.loader.EpochLoader`, as ``TrainBatches`` builds them; upstream: its
``RFDETRDataModule.train_dataloader()`` (persistent workers, its own collate and padding).
Each side's cost runs until the batch is the model's float input on the training device
(``--device``, default cpu): our loader yields uint8 batches, so the timed loop includes
:func:`rfdetr.data.normalize.normalize_images` on that device, as the training step runs it;
upstream's batches are normalised floats already and are only moved there.

Each measurement runs in a fresh process (both packages are named ``rfdetr``): it builds the
loader, runs one untimed epoch (worker start-up, caches), then times ``--batches`` batches
across as many epochs as that takes (a new epoch re-seeds the shuffle and augmentation, as in
training) and reports images/s and the mean wait for an epoch's first batch. Rounds interleave
sides and worker counts, so background load hits both alike; medians are printed. The
environment is the user's, less ``OMP_WAIT_POLICY`` (``--omp-passive`` sets it to PASSIVE for
both sides; without it, OpenMP threads spin while they wait, the default).

The default dataset is "the trees set": tiles (640 px, stride 320, JPEG q90) of the aerial tree
images with Pascal VOC boxes that the ``deepforest`` wheel ships (``deepforest/data``), written
once as a Roboflow-style COCO folder under ``~/.cache/rfdetr-benchmarks`` (the wheel is fetched
with ``pip download``).

Usage::

    .venv/bin/python benchmarks/loader_throughput.py [--dataset COCO_DIR] [--workers 0 1 2]
        [--rounds 3] [--batches 100] [--upstream-python PATH | --upstream-python '']
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

CACHE = Path.home() / ".cache" / "rfdetr-benchmarks"
DEEPFOREST = "deepforest==2.1.0"
TREE_IMAGES = (
    "2019_YELL_2_528000_4978000_image_crop2",
    "2019_YELL_2_541000_4977000_image_crop",
    "OSBS_029",
    "SOAP_061",
)
TILE, STRIDE = 640, 320
BATCH, RESOLUTION, MULTIPLE = 4, 384, 32


def voc_boxes(xml: str) -> list[tuple[float, ...]]:
    """``(x1, y1, x2, y2)`` of every ``<bndbox>`` of a Pascal VOC file."""
    pattern = r"<xmin>([\d.]+)</xmin>\s*<ymin>([\d.]+)</ymin>\s*<xmax>([\d.]+)</xmax>\s*<ymax>([\d.]+)</ymax>"  # noqa: E501
    return [tuple(float(v) for v in match) for match in re.findall(pattern, xml)]


def tile_image(image: Any, boxes: list, stem: str, out: Path, coco: dict) -> None:
    """Cut ``image`` into tiles (edge tiles under 200 px dropped); boxes clipped to each tile."""
    width, height = image.size
    for top in range(0, max(height - TILE, 0) + 1, STRIDE):
        for left in range(0, max(width - TILE, 0) + 1, STRIDE):
            tile = image.crop((left, top, min(left + TILE, width), min(top + TILE, height)))
            tw, th = tile.size
            image_id = len(coco["images"])
            name = f"{stem}_{top}_{left}.jpg"
            tile.save(out / name, quality=90)
            coco["images"].append({"id": image_id, "file_name": name, "width": tw, "height": th})
            for x1, y1, x2, y2 in boxes:
                cx1, cy1 = max(x1 - left, 0), max(y1 - top, 0)
                cx2, cy2 = min(x2 - left, tw), min(y2 - top, th)
                if cx2 - cx1 >= 4 and cy2 - cy1 >= 4:
                    coco["annotations"].append(
                        {"id": len(coco["annotations"]), "image_id": image_id, "category_id": 1,
                         "bbox": [cx1, cy1, cx2 - cx1, cy2 - cy1],
                         "area": (cx2 - cx1) * (cy2 - cy1), "iscrowd": 0}
                    )  # fmt: skip


def trees_dataset() -> Path:
    """The trees set (see the module docstring), built on first use."""
    from PIL import Image

    root = CACHE / "trees"
    if (root / "valid" / "_annotations.coco.json").exists():
        return root
    wheels = CACHE / "wheels"
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels)]
    subprocess.run([*pip, DEEPFOREST], check=True)
    wheel = zipfile.ZipFile(next(wheels.glob("deepforest-*.whl")))
    coco: dict[str, list] = {"images": [], "annotations": []}
    coco["categories"] = [
        {"id": 0, "name": "trees", "supercategory": "none"},
        {"id": 1, "name": "Tree", "supercategory": "trees"},
    ]
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for stem in TREE_IMAGES:
        image = Image.open(io.BytesIO(wheel.read(f"deepforest/data/{stem}.png"))).convert("RGB")
        boxes = voc_boxes(wheel.read(f"deepforest/data/{stem}.xml").decode())
        tile_image(image, boxes, stem, root / "train", coco)
    for entry in coco["images"][:4]:  # a token validation split: the format wants one
        (root / "valid" / entry["file_name"]).write_bytes(
            (root / "train" / entry["file_name"]).read_bytes()
        )
    valid = {**coco, "images": coco["images"][:4]}
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(coco))
    (root / "valid" / "_annotations.coco.json").write_text(json.dumps(valid))
    return root


def ours_loader(dataset_dir: str, workers: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    from rfdetr.data.dataset import build_dataset
    from rfdetr.data.loader import EpochLoader, make_train_sampler
    from rfdetr.data.normalize import model_input

    dataset = build_dataset(
        dataset_dir, "train", RESOLUTION, train=True, scale_multiple=MULTIPLE, expanded_scales=True
    )
    generator = torch.Generator()
    sampler = make_train_sampler(len(dataset), BATCH, generator=generator)
    loader = EpochLoader(dataset, sampler, BATCH, num_workers=workers)

    def epoch(number: int) -> Any:  # as TrainBatches.epoch
        generator.manual_seed(number)
        return loader.epoch(number)

    return epoch, dataset.sizes, lambda images: model_input(images, device)


def upstream_loader(dataset_dir: str, workers: int, device: str) -> tuple[Any, Any, Any]:
    from rfdetr.training.module_data import RFDETRDataModule

    from rfdetr.config import RFDETRNanoConfig, TrainConfig

    model = RFDETRNanoConfig(num_classes=1, pretrain_weights=None, resolution=RESOLUTION)
    train = TrainConfig(
        dataset_dir=dataset_dir, output_dir=str(CACHE / "upstream-out"), batch_size=BATCH,
        grad_accum_steps=1, num_workers=workers, multi_scale=True, epochs=1,
    )  # fmt: skip
    module = RFDETRDataModule(model, train)
    module.setup("fit")
    loader = module.train_dataloader()
    return (lambda number: loader), None, lambda images: images.tensors.to(device)


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process (see the module docstring)."""
    build = ours_loader if kind == "ours" else upstream_loader
    epoch, sizes, model_input = build(str(args.dataset), args.workers[0], args.device)
    batches, shapes, dtypes = args.batches, set(), set()
    for images, _ in epoch(0):  # untimed: worker start-up
        shapes.add(tuple(getattr(images, "tensors", images).shape[-2:]))
        dtypes.add(str(getattr(images, "tensors", images).dtype))
        model_input(images)
    done, number, waits = 0, 1, []
    start = time.perf_counter()
    while done < batches:
        begin = time.perf_counter()
        for i, (images, _) in enumerate(epoch(number)):
            model_input(images)
            if i == 0:
                waits.append(time.perf_counter() - begin)
            done += 1
            if done == batches:
                break
        number += 1
    if args.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"img_s": done * BATCH / elapsed, "first_batch_s": statistics.mean(waits),
            "epochs": number - 1, "shapes": sorted(shapes), "sizes": sizes,
            "dtypes": sorted(dtypes)}  # fmt: skip


def run_one(python: str, kind: str, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_WAIT_POLICY")}
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if kind == "ours":  # this checkout's rfdetr, not whichever one is installed
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    command = [python, "-W", "ignore", str(Path(__file__).resolve()), "--measure", kind]
    command += ["--dataset", str(args.dataset), "--batches", str(args.batches)]
    command += ["--workers", str(workers), "--device", args.device]
    output = subprocess.run(
        command, check=True, capture_output=True, text=True, env=env, cwd=CACHE
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def upstream_python(given: str | None) -> str:
    """``given``, or the ``.upstream-venv`` of ``parity_upstream.py`` with upstream's ``train``
    extra (its data module needs pytorch-lightning)."""
    if given is not None:
        return given
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from parity_upstream import ensure_upstream_venv

    python = str(ensure_upstream_venv(None))
    check = subprocess.run([python, "-c", "import pytorch_lightning"], capture_output=True)
    if check.returncode:
        pip = [python, "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "rfdetr[train]==1.11.2", "torch==2.14.1", "torchvision==0.29.1"],
                       check=True)  # fmt: skip
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None, help="COCO folder (default: trees)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per measurement")
    parser.add_argument("--upstream-python", default=None, help="'' measures ours only")
    parser.add_argument(
        "--omp-passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE for both sides"
    )
    parser.add_argument(
        "--device", default="cpu", help="training device the batches are made ready on"
    )
    parser.add_argument("--measure", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = measure(args.measure, args)
        print(json.dumps(result), flush=True)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    args.dataset = (args.dataset or trees_dataset()).resolve()
    pythons = {"ours": sys.executable}
    upstream = upstream_python(args.upstream_python)
    if upstream:
        pythons["upstream"] = upstream
    print(f"dataset {args.dataset}, batch {BATCH}, Nano {RESOLUTION} multi-scale, "
          f"{args.batches} batches x {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={'PASSIVE' if args.omp_passive else 'unset'}, "
          f"batches made ready on {args.device}, load average {os.getloadavg()}")  # fmt: skip
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_index in range(args.rounds):
        for workers in args.workers:
            for kind, python in pythons.items():
                result = run_one(python, kind, args, workers)
                results.setdefault((kind, workers), []).append(result)
                print(f"round {round_index} {kind:8s} workers {workers}: "
                      f"{result['img_s']:6.1f} img/s, first batch {result['first_batch_s']:.3f} s, "
                      f"batches {'/'.join(result['dtypes'])}", flush=True)  # fmt: skip
    print("\nmedians")
    for workers in args.workers:
        line = f"workers {workers}:"
        rates = {}
        for kind in pythons:
            runs = results[(kind, workers)]
            rates[kind] = statistics.median(r["img_s"] for r in runs)
            wait = statistics.median(r["first_batch_s"] for r in runs)
            line += f"  {kind} {rates[kind]:6.1f} img/s (first batch {wait:.3f} s)"
        if "upstream" in rates:
            line += f"  ratio {rates['ours'] / rates['upstream']:.2f}x"
        print(line)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
