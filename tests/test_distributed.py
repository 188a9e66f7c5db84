"""Two CPU processes with gloo (the torchrun set-up): ranks stay in sync, statistics are reduced across
ranks, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from sg2_training_support.data import TESTS_DIR, make_shapes, tiny_args

from stylegan2_ada.training.data import BadItemLog, ItemFailure
from stylegan2_ada.training.distributed import DistInfo, init_distributed, shutdown_distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_torchrun_rank(rank: int, port: int) -> None:
    """Set what torchrun sets for each process; one torch thread per process."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)


def _network_tensors(result) -> dict[str, torch.Tensor]:
    """``{"G.<key>": tensor, "D.<key>": ..., "G_ema.<key>": ...}``: a training result's network states."""
    return {
        f"{name}.{k}": v.detach().clone()
        for name, net in (("G", result.G), ("D", result.D), ("G_ema", result.G_ema))
        for k, v in net.state_dict().items()
    }


def _worker(rank: int, port: int, args: list[str], out: str) -> None:
    _as_torchrun_rank(rank, port)
    from stylegan2_ada.training import cli

    result = cli.main(args, standalone_mode=False)
    tensors = _network_tensors(result)
    tensors["augment_p"] = result.augment_pipe.p.detach().clone()
    torch.save(
        {
            "tensors": tensors,
            "run_dir": str(result.run_dir) if result.run_dir else None,
            "cur_nimg": result.state.cur_nimg,
        },
        os.path.join(out, f"rank{rank}.pt"),
    )


def test_two_gloo_processes_stay_in_sync(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    data = make_shapes(tmp_path / "shapes", n=8)
    png = data / "img0005.png"
    png.write_bytes(png.read_bytes()[:40])  # a truncated file: skipped and replaced alike on both ranks
    outdir = tmp_path / "runs"
    # 8 images per step = 2 ranks x 2 rounds x 2 (gradient accumulation too); 5 steps (ADA updates at 0 and 4).
    args = tiny_args(
        outdir,
        data,
        "--cond=1",
        "--gpus",
        "2",
        "--batch",
        "8",
        "--batch-gpu",
        "2",
        "--mbstd-group",
        "2",
        "--aug",
        "ada",
        "--ada-kimg",
        "0.05",
        "--target",
        "0",
        "--dlr",
        "0.02",
        kimg=0.04,
        tick=0.016,
    )
    mp.spawn(_worker, args=(_free_port(), args, str(tmp_path)), nprocs=WORLD, join=True)

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["run_dir"] is not None and r1["run_dir"] is None  # only rank 0 has a run folder
    assert r0["cur_nimg"] == r1["cur_nimg"] == 40
    assert len(list(outdir.iterdir())) == 1
    assert r0["tensors"].keys() == r1["tensors"].keys()
    for k, v in r0["tensors"].items():
        torch.testing.assert_close(v, r1["tensors"][k], rtol=0, atol=0, msg=k)  # identical on both ranks
    assert float(r0["tensors"]["augment_p"]) > 0  # ADA moved p, identically on both ranks

    run_dir = Path(r0["run_dir"])
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    # Tick 0 is one step: 8 real images over both ranks (each rank reports its own 4).
    assert stats[0]["Loss/scores/real"]["num"] == 8
    assert [s["Progress/kimg"]["mean"] for s in stats] == [0.008, 0.024, 0.04]
    opts = json.loads((run_dir / "training_options.json").read_text())
    assert opts["world_size"] == 2 and opts["gpus"] == 2
    assert [s["Progress/bad_items"]["mean"] for s in stats] == [1, 1, 1]
    assert (run_dir / "log.txt").read_text().count("Skipped a training item") == 1
    assert sorted(p.name for p in run_dir.glob("network-snapshot-*")) == [
        "network-snapshot-000000.008.safetensors",
        "network-snapshot-000000.024.safetensors",
        "network-snapshot-000000.040.safetensors",
    ]


def _exchange_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    info = DistInfo(rank=rank, world_size=WORLD, local_rank=rank)
    init_distributed(info, "cpu")
    said: list[str] = []
    log = BadItemLog(limit=2, say=said.append if rank == 0 else lambda line: None)  # as the loop's say
    cpu = torch.device("cpu")
    if rank == 1:
        log.record([ItemFailure(5, "img5.png", "DatasetError: truncated")])
    first = log.exchange(info, cpu)
    quiet = log.exchange(info, cpu)  # nothing new anywhere: no records gathered
    log.record([ItemFailure(rank, f"img{rank}.png", "OSError: gone")])
    last = log.exchange(info, cpu)
    shutdown_distributed(info)
    with open(os.path.join(out, f"exchange{rank}.json"), "w") as f:
        json.dump({"said": said, "reasons": [first, quiet, last], "count": log.count}, f)


def test_bad_items_of_every_rank_are_logged_on_rank_0_and_counted_alike(tmp_path: Path) -> None:
    # fork: the workers need no fresh interpreter (no CUDA, no threads started yet that matter here).
    mp.start_processes(
        _exchange_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork"
    )
    r0, r1 = (json.loads((tmp_path / f"exchange{r}.json").read_text()) for r in range(WORLD))
    assert r0["said"][0] == (
        "Skipped a training item that cannot be loaded (rank 1): img5.png: DatasetError: truncated "
        "[1 so far, at most 2 (--max-bad-images)]"
    )
    assert len(r0["said"]) == 3 and r1["said"] == []
    assert r0["count"] == r1["count"] == 3
    assert r0["reasons"] == r1["reasons"]  # the same stop decision on every rank
    assert r0["reasons"][:2] == [None, None] and r0["reasons"][2].startswith("3 training items could not")


def _seam_worker(rank: int, port: int, args: list[str], out: str) -> None:
    _as_torchrun_rank(rank, port)
    from sg2_training_support import takeover

    from stylegan2_ada.training import cli

    result = cli.main(args, standalone_mode=False)
    tensors = _network_tensors(result)
    steps = [(s.step, s.phases, s.real_batch, s.real_batch_total) for s in takeover.SEEN["steps"]]
    torch.save(
        {"tensors": tensors, "steps": steps, "cur_nimg": result.state.cur_nimg},
        os.path.join(out, f"r{rank}.pt"),
    )


def test_empty_batches_on_one_rank_and_noise_after_the_sum_keep_ranks_in_step(
    tmp_path: Path, monkeypatch
) -> None:
    """A plugin sampler gives rank 1 no examples on some steps (D's core phase Dboth at step 0, the
    plugin's Dmain at others) and the plugin adds noise after the cross-rank sum from the shared generator:
    the ranks must stay identical (the loop also checks this at every snapshot)."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    data = make_shapes(tmp_path / "shapes", n=8)
    args = tiny_args(
        tmp_path / "runs",
        data,
        "--cond=1",
        "--gpus",
        "2",
        "--aug",
        "noaug",
        "--plugin",
        "sg2_training_support.takeover",
        "--toy-sizes",
        "1,0,3,4",
        "--toy-takeover",
        "Dmain",
        "--toy-noise",
        "0.3",
        kimg=0.008,
    )
    mp.spawn(_seam_worker, args=(_free_port(), args, str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["cur_nimg"] == r1["cur_nimg"] == 8  # real examples actually shown, over both ranks
    assert [s[2] for s in r0["steps"]] == [1, 0, 2, 2]  # indices[rank::2] of 1, 0, 3, 4 examples
    assert [s[2] for s in r1["steps"]] == [0, 0, 1, 2]
    assert [s[3] for s in r1["steps"]] == [1, 0, 3, 4]
    assert r0["steps"][0][1] == ("Gmain", "Greg", "Dboth")
    for k, v in r0["tensors"].items():
        torch.testing.assert_close(v, r1["tensors"][k], rtol=0, atol=0, msg=k)
