"""Running one engine command as several processes under `torchrun` (torch.distributed).

``torchrun --nproc_per_node=K -m engine embed ...`` starts K copies of the same command; each
finds its rank here, joins one process group (gloo on CPU, NCCL when every rank has a GPU) and
takes its share of the work: embedding chunks, or chunks of attack queries. Results are gathered
so that they are byte-identical to a single-process run, and only rank 0 prints and writes the
DuckDB file (one writer). Without torchrun's environment nothing here starts a process group and
`current()` is a world of one.

A rank that dies makes the others fail in their next collective with one line (`DistributedError`);
what was completed (embedding chunk files) stays on disk and the same command resumes from it.
torch is imported only when a process group is actually needed. More in docs/scaling.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta

from engine.errors import EngineError

log = logging.getLogger(__name__)

# How long a collective waits for a rank that is alive but slow (a rank that died is noticed as
# soon as its connection closes). RELINK_DIST_TIMEOUT overrides it, in seconds.
DEFAULT_TIMEOUT_S = 1800


class DistributedError(EngineError):
    """A rank stopped, or the ranks could not agree on the work."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks.

    Attributes:
        rank: Global rank (0 prints and writes the database).
        size: Number of ranks (``world_size``); 1 without torchrun.
        local_rank: Rank on this node (picks the GPU).
        backend: ``gloo``, ``nccl``, or None for a world of one.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        """This rank's device: its own GPU under NCCL, else the CPU."""
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"

    def share(self, items: list) -> list:
        """This rank's share of `items` (round-robin, so shares differ by at most one)."""
        return list(items)[self.rank::self.size]


_WORLD: World | None = None


def launched() -> bool:
    """True when this process was started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ


def world_size() -> int:
    """Number of ranks of this run, from the environment (no process group needed)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) if launched() else 1


def quiet_unless_main() -> None:
    """Under torchrun, send the output of every rank but 0 to nowhere (errors still show)."""
    if not launched():
        return
    if os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process
        os.environ["TQDM_DISABLE"] = "1"
    # torchrun stops the surviving ranks with SIGTERM when one fails: say so in one line.
    signal.signal(signal.SIGTERM, _stopped)


def _stopped(signum, frame) -> None:
    raise DistributedError(
        f"rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')}: stopped because "
        "another rank failed; completed chunks are kept, rerun the same command to resume")


def current() -> World:
    """This process's `World`; joins the process group on first use under torchrun."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    if not launched():
        _WORLD = World()
        return _WORLD
    import torch
    import torch.distributed as dist

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = os.environ.get("RELINK_DIST_BACKEND")
    backend = wanted or ("nccl" if torch.cuda.is_available()
                         and torch.cuda.device_count() > local else "gloo")
    timeout = timedelta(seconds=float(os.environ.get("RELINK_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    if not dist.is_initialized():
        kwargs = {}
        if backend == "nccl":
            torch.cuda.set_device(local)
            kwargs["device_id"] = torch.device("cuda", local)
        try:
            dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one line, whatever the backend raised
            raise DistributedError(
                f"rank {rank} of {size}: could not join the process group ({backend}): "
                f"{_first_line(exc)}") from None
        atexit.register(_finish)
    _WORLD = World(rank=rank, size=size, local_rank=local, backend=backend)
    log.info("rank %d of %d joined (%s)", rank, size, backend)
    return _WORLD


def _finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _collective(what: str, call):
    world = current()
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - gloo and NCCL raise several types
        raise DistributedError(
            f"rank {world.rank} of {world.size}: another rank stopped during {what} "
            f"({_first_line(exc)}); completed chunks are kept, rerun the same command to "
            "resume") from None


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank (a list of one without torchrun)."""
    world = current()
    if world.size == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world.size
    _collective("a gather", lambda: dist.all_gather_object(out, obj))
    return out


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    world = current()
    if world.size == 1:
        return obj
    import torch.distributed as dist

    box = [obj if world.is_main else None]
    _collective("a broadcast", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def barrier(what: str = "a barrier") -> None:
    """Wait until every rank is here (nothing without torchrun)."""
    world = current()
    if world.size == 1:
        return
    import torch.distributed as dist

    if world.backend == "nccl":
        _collective(what, lambda: dist.barrier(device_ids=[world.local_rank]))
    else:
        _collective(what, dist.barrier)
