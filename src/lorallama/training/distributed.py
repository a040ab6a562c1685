"""Data-parallel training: the launcher that starts N workers of a command, and the checks before it does.

The command line re-runs its own ``train`` command under the launcher (``lorallama train … --gpus N``); each worker
then trains as one DDP rank (transformers + PEFT, or gloo CPU workers with ``--backend cpu``).
"""

from __future__ import annotations

import sys

from ..errors import TrainError


def worker_backend(backend: str | None) -> str:
    """The backend DDP workers use: CPU when asked, else transformers + PEFT (Unsloth trains on one GPU)."""
    if backend == "unsloth":
        raise TrainError(
            "--gpus runs the transformers+PEFT backend (Unsloth trains on one GPU): drop --backend unsloth"
        )
    return "cpu" if backend == "cpu" else "transformers"


def launcher(processes: int, backend: str) -> list[str]:
    """The command prefix that starts ``processes`` workers; the caller appends the worker's own command."""
    if backend != "cpu":
        import torch

        if torch.cuda.device_count() < processes:
            raise TrainError(
                f"--gpus {processes} needs {processes} CUDA GPUs and {torch.cuda.device_count()} are visible: "
                "lower --gpus, or add --backend cpu to run that many CPU processes"
            )
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    # accelerate launches CPU workers only through MPI; torchrun starts gloo workers the Trainer joins.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def is_worker(environ) -> bool:
    """True inside a launched worker (the launcher sets LOCAL_RANK)."""
    return "LOCAL_RANK" in environ
