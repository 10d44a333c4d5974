"""Pinned numerics: the same trained weights on every x86-64 CPU with AVX2.

See docs/reproducibility.md.

Training sums millions of floating-point products, and the order of those sums depends on which
code path a library picks for the CPU it finds: MKL's GEMM kernels, oneDNN's convolution kernels
and ATen's own vectorised kernels each have AVX2, AVX-512 and AMX variants whose roundings differ.
The thread count changes how reductions are split as well. A ladder trained on a laptop and the
same ladder trained on a server would then differ in the last bits after the first step, and
after a few hundred steps in visible figures.

`pin_numerics` fixes the instruction-set path of the three libraries to AVX2 before torch is
imported (MKL's conditional numerical reproducibility in strict mode, oneDNN's maximum ISA and
ATen's CPU capability); `training_threads` fixes the intra-op thread count of the training stages
(the phantom ladder, DP heads, adaptive heads) to `TRAIN_THREADS` whatever the machine has.
``RELINK_NUMERICS=native`` turns the pinning off (the libraries' own choice; faster on AVX-512
machines, not reproducible across CPUs). `settings` is what a run records.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

ENV = "RELINK_NUMERICS"
"""``pinned`` (default) or ``native``."""

PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels (softmax, layer norm, reductions)
    "MKL_CBWR": "AVX2,STRICT",  # MKL's GEMM: the AVX2 branch, strict CNR (thread-count proof)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions, some matmuls): no AVX-512 / AMX
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same for older oneDNN builds
}

TRAIN_THREADS = 2
"""Intra-op threads of every training stage, on any machine."""


def mode() -> str:
    """``pinned`` or ``native`` (from ``RELINK_NUMERICS``; anything else is ``pinned``)."""
    return "native" if os.environ.get(ENV, "").strip().lower() == "native" else "pinned"


def pin_numerics() -> bool:
    """Set the instruction-set variables before torch is imported; True when they are set.

    Called by the CLI's entry point. If torch is already imported the variables can no longer
    take effect: nothing is changed and a warning says so (the run records ``native``).
    """
    if mode() == "native":
        return False
    if "torch" in sys.modules:
        if any(os.environ.get(k) != v for k, v in PINNED_ENV.items()):
            log.warning("torch was imported before the numerics could be pinned; this process "
                        "uses the CPU's own code paths (figures may differ between machines)")
            return False
        return True
    os.environ.update(PINNED_ENV)
    return True


def is_pinned() -> bool:
    """True when every pinned variable holds its value in this process."""
    return mode() == "pinned" and all(os.environ.get(k) == v for k, v in PINNED_ENV.items())


@contextlib.contextmanager
def training_threads(threads: int | None = None) -> Iterator[int]:
    """Run a training stage with a fixed intra-op thread count (`TRAIN_THREADS` when pinned).

    Under ``RELINK_NUMERICS=native`` (and no explicit ``threads``) the count is left alone.
    """
    import torch

    previous = torch.get_num_threads()
    wanted = threads if threads is not None else (TRAIN_THREADS if is_pinned() else previous)
    torch.set_num_threads(int(wanted))
    try:
        yield int(wanted)
    finally:
        torch.set_num_threads(previous)


def settings() -> dict:
    """What a run records: the mode, the pinned variables as this process sees them, threads."""
    return {
        "numerics": "pinned" if is_pinned() else "native",
        **{k.lower(): os.environ.get(k) for k in PINNED_ENV},
        "train_threads": TRAIN_THREADS if is_pinned() else None,
    }
