"""Peak resident memory of the phantom ladder at the study's scale, in a fresh process.

The study's ladder trains 4 epochs over 55,186 pairs (about 27 minutes here); its memory does
not grow with epochs, so this benchmark trains the study's ladder configuration for rungs of 0
and 1 epoch into a scratch cache that reuses the study's preprocessed pixels
(``<workdir>/models/.inputs``), samples the process's resident memory every 0.2 s
(`engine.study.PeakMemory`) and prints the peak and the time.

    python bench/ladder_memory.py [--workdir cache/study] [--scratch /tmp/ladder-memory]
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.memory import limit_heap  # noqa: E402
from engine.numerics import pin_numerics  # noqa: E402

pin_numerics()
limit_heap()

from engine.study import COHORT, PeakMemory, StudyConfig  # noqa: E402
from synthetic.ladder.ladder import LadderConfig, train_ladder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("cache/study"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/ladder-memory"))
    args = parser.parse_args()
    inputs = args.workdir / "models" / ".inputs"
    if not inputs.is_dir():
        sys.exit(f"{inputs}: run the study's ladder first (its preprocessed pixels are reused)")
    shutil.rmtree(args.scratch, ignore_errors=True)
    (args.scratch / "models").mkdir(parents=True)
    (args.scratch / "models" / ".inputs").symlink_to(inputs.resolve())
    db = args.scratch / "relink.duckdb"
    shutil.copy(args.workdir / "relink.duckdb", db)
    study = StudyConfig()
    config = LadderConfig(rung_epochs=(0, 1), seed=study.seed,
                          batch_size=study.ladder_batch_size,
                          context_length=study.context_length)
    start = time.perf_counter()
    with PeakMemory() as mem:
        result = train_ladder(db, args.scratch, COHORT, config=config)
    print(f"ladder (study scale, rungs 0 and 1 epoch, {result.n_train} training pairs): "
          f"peak {mem.peak_mb:,.0f} MB resident, {time.perf_counter() - start:,.0f} s")


if __name__ == "__main__":
    main()
