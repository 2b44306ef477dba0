"""Checkpoint files under hostile conditions (issue 13): a full disk, truncated or hostile best
files, and temporaries left by kills. Each is a one-line error naming the file, and nothing that
was on disk before is lost."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from rfdetr import checkpoints as files
from rfdetr.checkpoints.formats import CheckpointError
from rfdetr.config import RunConfig
from rfdetr.training import fit

MARKER = "/tmp/rfdetr-hostile-pickle-ran"


class _Evil:
    """Unpickles as a call to ``os.system``: weights_only loading must refuse it."""

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _hostile(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"model": _Evil()}, protocol=2))
    return path


def _one_line_naming(error: BaseException, path: Path) -> None:
    message = str(error)
    assert "\n" not in message and str(path) in message, message


@pytest.fixture(scope="module")
def finished_run(shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch tiny run (best regular, EMA and total files)."""
    from training_helpers import tiny_options

    out = tmp_path_factory.mktemp("finished")
    torch.set_num_threads(1)
    fit(RunConfig.from_kwargs("tiny", **tiny_options(shapes_coco, out, epochs=1)))
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    for file in finished_run.iterdir():
        if file.is_file():
            (copy / file.name).write_bytes(file.read_bytes())
    return copy


@pytest.mark.parametrize("damage", [_truncated, _hostile], ids=["truncated", "hostile"])
def test_select_best_on_a_damaged_best_file_names_it(
    run_copy: Path, damage: Callable[[Path], Path]
) -> None:
    bad = damage(run_copy / files.BEST_EMA)
    with pytest.raises(CheckpointError) as caught:
        files.select_best(run_copy)
    _one_line_naming(caught.value, bad)
    assert not Path(MARKER).exists()


def test_select_best_to_a_dest_leaves_the_run_folder_untouched(
    run_copy: Path, tmp_path: Path
) -> None:
    """``dest`` serves a pipeline step whose run folder is a read-only input artifact."""
    before = {file.name: file.read_bytes() for file in run_copy.iterdir()}
    (tmp_path / "out").mkdir()
    written = files.select_best(run_copy, tmp_path / "out" / files.BEST_TOTAL)
    assert written == tmp_path / "out" / files.BEST_TOTAL
    assert {file.name: file.read_bytes() for file in run_copy.iterdir()} == before
    in_place = files.select_best(run_copy)  # the same choice written next to its inputs
    assert files.read_checkpoint(written).metrics == files.read_checkpoint(in_place).metrics


@pytest.mark.parametrize("damage", [_truncated, _hostile], ids=["truncated", "hostile"])
def test_resuming_a_finished_run_with_a_damaged_best_file_names_it(
    run_copy: Path, shapes_coco: Path, tiny_config: Callable[..., RunConfig],
    damage: Callable[[Path], Path],
) -> None:  # fmt: skip
    bad = damage(run_copy / files.BEST_TOTAL)
    config = tiny_config(shapes_coco, run_copy, epochs=1, resume=str(run_copy / files.LAST))
    with pytest.raises(CheckpointError) as caught:
        fit(config)
    _one_line_naming(caught.value, bad)
    assert not Path(MARKER).exists()


def _enospc_save(obj: object, handle: object, *args: object, **kwargs: object) -> None:
    handle.write(b"PK\x03\x04 partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _check_disk_full(folder: Path, save: Callable[[Path], object], *patches: Callable) -> None:
    previous = folder / "checkpoint.pth"
    files.atomic_save({"epoch": 1, "w": torch.ones(3)}, previous)
    for patch in patches:
        patch()
    with pytest.raises(CheckpointError) as caught:
        save(previous)
    for patch in patches:
        patch(undo=True)
    _one_line_naming(caught.value, previous)
    assert "ENOSPC" in str(caught.value)
    kept = torch.load(previous, map_location="cpu", weights_only=True)  # nothing lost
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert not list(folder.glob(".*.tmp"))


def test_disk_full_at_a_checkpoint_write_is_one_line_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's own file object raises ENOSPC (as a full disk does; see the tmpfs test)."""
    real_save = torch.save

    def patch(undo: bool = False) -> None:
        monkeypatch.setattr(torch, "save", real_save if undo else _enospc_save)

    _check_disk_full(tmp_path, lambda p: files.atomic_save({"epoch": 2}, p), patch)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root: mount); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)  # a leaked handle: detach
            pytest.fail(f"{mount}: still busy after the test (a file handle was left open)")


def test_a_real_full_disk_at_a_checkpoint_write(tiny_disk: Path) -> None:
    big = {"epoch": 2, "w": torch.zeros(1_000_000)}  # 4 MB into 1 MiB
    _check_disk_full(tiny_disk, lambda p: files.atomic_save(big, p))


def test_a_second_name_shares_the_bytes_and_outlives_a_rewrite(tmp_path: Path) -> None:
    """``checkpoint_best_total.pth`` is linked to the best file just written, not saved again."""
    source = files.atomic_save({"epoch": 1, "w": torch.arange(4.0)}, tmp_path / "best_ema.pth")
    total = files.link_checkpoint(source, tmp_path / "best_total.pth")
    assert total.read_bytes() == source.read_bytes()
    assert os.stat(total).st_ino == os.stat(source).st_ino  # written once
    files.atomic_save({"epoch": 2, "w": torch.zeros(4)}, source)  # the next best EMA epoch
    kept = torch.load(total, map_location="cpu", weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.arange(4.0))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_second_name_is_a_copy_where_links_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))  # e.g. a FUSE-mounted bucket

    source = files.atomic_save({"epoch": 1, "w": torch.ones(3)}, tmp_path / "best_ema.pth")
    monkeypatch.setattr(os, "link", refuse)
    total = files.link_checkpoint(source, tmp_path / "best_total.pth")
    assert total.read_bytes() == source.read_bytes()
    assert os.stat(total).st_ino != os.stat(source).st_ino


def test_a_full_disk_when_copying_a_second_name(tiny_disk: Path, tmp_path: Path) -> None:
    """Across file systems there is no hard link: the copy fills the disk, and the previous
    file stays (a 1 MiB tmpfs: needs root)."""
    big = files.atomic_save({"w": torch.zeros(1_000_000)}, tmp_path / "best_ema.pth")
    _check_disk_full(tiny_disk, lambda p: files.link_checkpoint(big, p))


def test_stale_temporaries_are_removed_at_the_next_start(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.pth.abc123.tmp", out / ".checkpoint_best_ema.pth.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    unrelated = out / ".notes.tmp"
    unrelated.write_text("not ours")
    fit(tiny_config(shapes_coco, out, epochs=1))
    assert not any(path.exists() for path in stale)
    assert unrelated.exists()


@pytest.mark.parametrize("damage", [_truncated, _hostile], ids=["truncated", "hostile"])
def test_the_select_checkpoint_step_names_the_run_file_not_its_scratch_copy(
    run_copy: Path, tmp_path: Path, damage: Callable[[Path], Path]
) -> None:
    from pipelines.steps.model import select_checkpoint

    bad = damage(run_copy / files.BEST_REGULAR)
    with pytest.raises(CheckpointError) as caught:
        select_checkpoint(run_copy, tmp_path / "model")
    _one_line_naming(caught.value, bad)


def test_the_record_of_a_resume_checkpoint_and_its_ema(finished_run: Path, tmp_path: Path) -> None:
    """``read_checkpoint(checkpoint.pth)``: weights, EMA weights, the run config, classes and
    dataset ids as training wrote them; ``strip_checkpoint(use_ema=True)`` keeps the EMA weights
    and ``load_model`` builds the model they fill."""
    raw = torch.load(finished_run / files.LAST, map_location="cpu", weights_only=True)
    record = files.read_checkpoint(finished_run / files.LAST)
    assert (record.format, record.epoch, record.size) == ("rfdetr", raw["epoch"], "tiny")
    assert record.run_config is not None and record.class_names == raw["class_names"]
    assert record.run_config.data.class_map == raw["config"]["data"]["class_map"]
    assert record.dataset_ids == raw["config"]["data"]["class_map"]["source_ids"]
    ema = raw["ema"]["module"]
    assert record.ema_state_dict is not None and record.ema_state_dict.keys() == ema.keys()
    assert all(torch.equal(record.ema_state_dict[k], ema[k]) for k in ema)
    assert all(torch.equal(record.state_dict[k], v) for k, v in raw["model"].items())
    stripped = files.strip_checkpoint(finished_run / files.LAST, tmp_path / "ema.pth", use_ema=True)
    model, config, loaded = files.load_model(stripped)
    assert loaded.ema_state_dict is None and config == record.run_config.model
    assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)
