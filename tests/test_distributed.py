"""Two CPU ranks (gloo) against one process: same bytes, same tables; a killed rank, then resume."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import _tiny_clip as tiny
from engine import distributed, store
from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
RESULT_TABLES = ("relink_ranks", "relink_metrics", "relink_summary", "relink_topk")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
               OMP_NUM_THREADS="1", RELINK_DIST_TIMEOUT="120", **extra)
    return env


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 36-study cohort (repeated report texts, so exact ties) and a tiny model, in one DB."""
    base = tmp_path_factory.mktemp("dist")
    db = base / "template.duckdb"
    tiny.make_cohort(db, base / "cohort", n=36)
    folder = base / "model"
    tiny.write_local_dir(folder, tiny.native_cfg(), seed=2)
    return base, db, f"local-dir:{folder}"


def _copy_db(cohort, name):
    base, template, spec = cohort
    db = base / f"{name}.duckdb"
    shutil.copy(template, db)
    return db, base / f"cache-{name}", spec


def _stage(db, cache, spec, stage, *extra):
    return ["--db", str(db), "--cache", str(cache), stage, "--model", spec, "--cohort", "tiny",
            *extra]


EMBED = ("--chunk-size", "5")
ATTACK = ("--pool-sizes", "3,5")


def _torchrun(args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "engine", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _arrays(cache):
    return {p.relative_to(cache).as_posix(): p.read_bytes()
            for p in sorted(Path(cache).glob("features/**/*.npy"))}


def _tables(db):
    out = {}
    for table in RESULT_TABLES:
        frame = store.read_df(db, f"SELECT * FROM {table}")
        out[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def test_two_torchrun_ranks_write_what_one_process_writes(cohort):
    db1, cache1, spec = _copy_db(cohort, "single")
    assert main(_stage(db1, cache1, spec, "embed", *EMBED)) == 0
    assert main(_stage(db1, cache1, spec, "attack", *ATTACK)) == 0

    db2, cache2, _ = _copy_db(cohort, "ranks")
    for stage, extra in (("embed", EMBED), ("attack", ATTACK)):
        done = _torchrun(_stage(db2, cache2, spec, stage, *extra))
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count(stage if stage == "embed" else "attack") >= 1

    one, two = _arrays(cache1), _arrays(cache2)
    assert one and one.keys() == two.keys()
    for name in one:
        assert one[name] == two[name], name  # byte-identical embeddings
    t1, t2 = _tables(db1), _tables(db2)
    for table in RESULT_TABLES:
        assert len(t1[table]) > 0, table
        assert t1[table].equals(t2[table]), table
    ranks = t1["relink_ranks"]
    assert (ranks["n_tied"] > 0).any()  # the repeated report texts tie

    def world_sizes(db):
        runs = store.read_df(db, "SELECT stage, config_json FROM runs "
                                 "WHERE stage IN ('embed', 'attack') ORDER BY stage")
        return {r.stage: json.loads(r.config_json)["environment"]["world_size"]
                for r in runs.itertuples()}

    assert world_sizes(db1) == {"attack": 1, "embed": 1}
    assert world_sizes(db2) == {"attack": 2, "embed": 2}


KILL_WORKER = """
import os, signal, sys
from engine.embed.stage import EmbedOptions, embed_cohort
from engine.cli import describe_error
db, cache, spec = sys.argv[1:4]
def on_chunk(index):
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # rank 1 dies after its first chunk is on disk
try:
    embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=5), on_chunk=on_chunk)
except Exception as exc:
    print("error: " + describe_error(exc)[0], file=sys.stderr)
    sys.exit(2)
"""


def test_a_killed_rank_fails_in_one_line_and_the_rerun_resumes(cohort):
    db, cache, spec = _copy_db(cohort, "killed")
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-c", KILL_WORKER, str(db), str(cache), spec], cwd=ROOT,
        env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert procs[1].returncode == -9
    assert procs[0].returncode == 2
    lines = [line for line in outs[0][1].splitlines() if line.strip()]
    assert len(lines) == 1, outs[0][1]
    assert lines[0].startswith("error: rank 0 of 2:") and "rerun" in lines[0]
    chunks = sorted(Path(cache).glob("features/**/chunks/chunk-*.npz"))
    assert 1 < len(chunks) < 8  # rank 1 left one chunk, rank 0 all of its share

    # The rerun (one process) computes only the missing chunks and ends where one run ends.
    from engine.embed.stage import EmbedOptions, embed_cohort

    result = embed_cohort(db, cache, spec, "tiny", options=EmbedOptions(chunk_size=5))
    assert result.chunks_reused == len(chunks)
    assert result.chunks_computed == 8 - len(chunks)
    fresh_db, fresh_cache, _ = _copy_db(cohort, "fresh")
    embed_cohort(fresh_db, fresh_cache, spec, "tiny", options=EmbedOptions(chunk_size=5))
    resumed, fresh = _arrays(cache), _arrays(fresh_cache)
    assert resumed.keys() == fresh.keys()
    for name in fresh:
        assert resumed[name] == fresh[name], name


def test_world_of_one_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and distributed.world_size() == 1
    assert distributed.all_gather({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast(3) == 3
    distributed.barrier()
    world = distributed.World(rank=1, size=3)
    assert world.share(list(range(8))) == [1, 4, 7]
    assert sorted(sum((distributed.World(rank=r, size=3).share(list(range(8)))
                       for r in range(3)), [])) == list(range(8))
    assert distributed.World(rank=0, size=2, local_rank=1, backend="nccl").device == "cuda:1"
