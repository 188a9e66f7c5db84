"""Crash-safe data loading: an item that fails to load mid-run is skipped, replaced, logged and counted;
too many end the run with a final snapshot and one clear error (issue 8, defect 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sg2_training_support.data import make_shapes, tiny_args

from stylegan2_ada.checkpoint import load_checkpoint
from stylegan2_ada.training import cli
from stylegan2_ada.training.data import (
    BadItemLog,
    InfiniteSampler,
    ItemFailure,
    TolerantDataset,
    make_loader,
    without_failures,
)
from stylegan2_ada.training.distributed import DistInfo
from stylegan2_ada.training.loop import TrainingStopped

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Flaky(torch.utils.data.Dataset):
    """``n`` items (image [1, 4, 4] filled with the index, label [2]); the ``bad`` ones raise."""

    resolution, num_channels, label_dim = 4, 1, 2

    def __init__(self, n: int, bad: set[int]) -> None:
        self.n, self.bad = n, set(bad)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self.bad:
            raise ValueError(f"cannot decode item {i}")
        return np.full([1, 4, 4], i, dtype=np.uint8), np.array([i, 1], dtype=np.float32)


class NamedFlaky(Flaky):
    def relpath(self, i: int) -> str:
        return f"img{i % 4}.png"  # items i and i + 4 are one file (like a mirrored dataset)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def read_stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- the loader


def test_a_failing_item_is_replaced_by_the_next_and_reported_once() -> None:
    ds = TolerantDataset(Flaky(5, bad={1, 2}), max_tries=10)
    image, label, failures = ds[1]
    assert int(image[0, 0, 0]) == 3 and label.tolist() == [3, 1]  # items 1 and 2 fail: item 3 instead
    assert failures == [
        ItemFailure(1, "item 1", "ValueError: cannot decode item 1"),
        ItemFailure(2, "item 2", "ValueError: cannot decode item 2"),
    ]
    image, _, failures = ds[2]  # known bad in this process: not read again, not reported again
    assert int(image[0, 0, 0]) == 3 and failures == []
    image, _, failures = ds[4]
    assert int(image[0, 0, 0]) == 4 and failures == []


def test_items_are_named_by_their_file_when_the_dataset_can() -> None:
    _, _, failures = TolerantDataset(NamedFlaky(8, bad={2}), max_tries=3)[2]
    assert [(f.index, f.item) for f in failures] == [(2, "img2.png")]


def test_no_loadable_item_gives_a_zero_item_and_a_fatal_record() -> None:
    ds = TolerantDataset(Flaky(6, bad={1, 2, 3}), max_tries=2)
    image, label, failures = ds[1]
    assert image.shape == (1, 4, 4) and not image.any() and label.shape == (2,) and not label.any()
    assert [f.index for f in failures] == [1, 2, 1] and [f.fatal for f in failures] == [False, False, True]
    assert "no loadable item found from item 1 on" in failures[-1].reason
    ds = TolerantDataset(Flaky(3, bad={0, 1, 2}), max_tries=100)  # every item is bad
    assert ds[0][2][-1].fatal and len(ds[0][2]) == 1  # the second call knows they are all bad


def test_failures_travel_from_loader_workers_to_the_main_process() -> None:
    ds = TolerantDataset(Flaky(8, bad={1, 6}), max_tries=4)
    loader = make_loader(
        ds, InfiniteSampler(8, shuffle=False), batch_gpu=4, workers=1, pin_memory=False, seed=0
    )
    records: list[ItemFailure] = []
    batches = without_failures(iter(loader), records.extend)
    first_images, first_labels = next(batches)
    second_images, _ = next(batches)
    assert first_images.shape == (4, 1, 4, 4) and first_labels.shape == (4, 2)
    assert first_images[:, 0, 0, 0].tolist() == [0, 2, 2, 3]  # item 1 -> item 2
    assert second_images[:, 0, 0, 0].tolist() == [4, 5, 7, 7]  # item 6 -> item 7
    assert [(f.index, f.reason) for f in records] == [
        (1, "ValueError: cannot decode item 1"),
        (6, "ValueError: cannot decode item 6"),
    ]


def test_bad_item_log_counts_distinct_items_and_stops_past_its_limit() -> None:
    said: list[str] = []
    log = BadItemLog(limit=1, say=said.append)
    info, cpu = DistInfo(), torch.device("cpu")
    assert log.exchange(info, cpu) is None
    log.record([ItemFailure(3, "img3.png", "DatasetError: truncated")])
    log.record([ItemFailure(7, "img3.png", "DatasetError: truncated")])  # its mirrored copy: same file
    assert log.exchange(info, cpu) is None and log.count == 1
    assert said == [
        "Skipped a training item that cannot be loaded: img3.png: DatasetError: truncated "
        "[1 so far, at most 1 (--max-bad-images)]"
    ]
    log.record([ItemFailure(5, "img5.png", "OSError: gone")])
    reason = log.exchange(info, cpu)
    assert log.count == 2 and reason.startswith(
        "2 training items could not be loaded, more than --max-bad-images=1"
    )
    fatal = BadItemLog(limit=100, say=said.append)
    fatal.record([ItemFailure(0, "item 0", "no loadable item found from item 0 on", fatal=True)])
    assert (
        fatal.exchange(info, cpu)
        == "no training item could be loaded: item 0: no loadable item found from item 0 on"
    )


# ------------------------------------------------------------------------------------------- in a run


def test_a_truncated_png_is_skipped_logged_and_counted(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    truncate(data / "img0003.png")
    result = cli.main(tiny_args(tmp_path / "runs", data, "--cond=1", "--mirror=1"), standalone_mode=False)
    assert result.state.cur_nimg == 16  # the run finished
    log = (result.run_dir / "log.txt").read_text()
    skipped = [line for line in log.splitlines() if line.startswith("Skipped a training item")]
    assert len(skipped) == 1, log  # once, although the file is read again (and mirrored)
    assert "img0003.png" in skipped[0] and "corrupt PNG" in skipped[0] and "Traceback" not in log
    stats = read_stats(result.run_dir)
    assert [s["Progress/bad_items"]["mean"] for s in stats] == [1, 1, 1]
    assert "bad_items 1" in log  # on the progress line


def test_too_many_bad_images_stop_with_a_final_snapshot_and_one_error_line(tmp_path: Path, capsys) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    truncate(data / "img0003.png")
    truncate(data / "img0006.png")
    args = tiny_args(tmp_path / "runs", data, "--cond=1", "--max-bad-images", "1")
    with pytest.raises(
        TrainingStopped, match="2 training items could not be loaded, more than --max-bad-images=1"
    ):
        cli.main(args, standalone_mode=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    (snapshot,) = run_dir.glob("network-snapshot-*.safetensors")
    assert load_checkpoint(snapshot).metadata["training_state"]["cur_nimg"] == 0
    log = (run_dir / "log.txt").read_text()
    assert log.count("Skipped a training item") == 2 and "img0003.png" in log and "img0006.png" in log
    assert log.rstrip().endswith("(each is listed in log.txt); fix or remove them, or raise --max-bad-images")
    assert "Error: 2 training items could not be loaded" in log

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)  # as train.py runs it
    assert exit_info.value.code == 1
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error")]
    assert err_lines == [
        "Error: 2 training items could not be loaded, more than --max-bad-images=1 (each is listed in "
        "log.txt); fix or remove them, or raise --max-bad-images"
    ]
