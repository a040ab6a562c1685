"""The decoding step compiled ahead of time (AOTInductor): built, checked before it is trusted, loaded for CUDA graphs.

ZeroGPU forbids ``torch.compile`` but runs programs compiled ahead of time: there ``spaces.aoti_compile`` builds the
package, elsewhere torch's own AOTInductor does, with the same options (the weights stay outside the library). Either
way the package runs through ``Step``, which loads it

- with torch's single-threaded runner: the default runner waits on its previous run's CUDA event before each run,
  which a CUDA-graph capture forbids (on an H200: 273 tokens/s without the graph, 591 with it, docs/benchmarks.md);
  ``spaces``' own ``ZeroGPUCompiledModel`` loads with the default runner. One runner is enough: answers run one at a
  time under the decoder's lock;
- once per process, on its first call: a ZeroGPU GPU worker is a fork of the Space that receives the step pickled and
  runs every request in a fresh copy of its ``contextvars`` context, and ``ZeroGPUCompiledModel`` keeps what it
  loaded in a ``ContextVar``, so it would load the package again for every request.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

from . import elf

# As spaces.aoti_compile: weights outside the shared library (a 1B model's would make it > 2 GB).
OUTSIDE_WEIGHTS = {
    "aot_inductor.package": True,
    "aot_inductor.package_constants_in_so": False,
    "always_keep_tensor_constants": True,
    "joint_graph_constant_folding": False,
}


def compile_ahead(exported, with_spaces: bool = False) -> Step:
    """``exported`` compiled to a package: by ``spaces.aoti_compile`` (``with_spaces``: what a ZeroGPU Space must
    use) or by torch's AOTInductor here, after a child process has proved that the package loads."""
    if with_spaces:
        import spaces

        return Step(spaces.aoti_compile(exported))
    folder = tempfile.mkdtemp(prefix="lorallama-aot-")
    package, weights = build_package(exported, os.path.join(folder, "step.pt2"))
    probe_load(package)
    return Step(Package(package, weights))


class Package:
    """A package file and the weights it runs with: the live tensors, so the library holds no second copy."""

    def __init__(self, archive_file: str, weights: dict):
        self.archive_file = archive_file
        self.constants_map = weights


class Step:
    """Calls the compiled step; the package is loaded on the first call in each process (see the module's note).

    ``source``: a ``Package``, or ``spaces``' ``ZeroGPUCompiledModel`` (its archive in memory, its weights moved to
    the GPU of the worker that unpickles it)."""

    def __init__(self, source):
        self.source = source
        self.loaded: tuple[int, Any] | None = None  # (the process, its loaded program)

    def __reduce__(self):  # what travels to another process is the source, never a loaded program
        return Step, (self.source,)

    def __call__(self, *args):
        loaded = self.loaded
        if loaded is None or loaded[0] != os.getpid():
            loaded = self.loaded = (os.getpid(), self._load())
        return loaded[1](*args)

    def _load(self):
        import torch

        source = self.source
        weights = source.constants_map if isinstance(source, Package) else source.weights.constants_map
        with _zero_gpu_cleanup(source):
            program = torch._inductor.aoti_load_package(source.archive_file, run_single_threaded=True)
        program.load_constants(
            {name: weights[name] for name in program.get_constant_fqns()}, check_full_update=True, user_managed=True
        )
        return program


def _zero_gpu_cleanup(source):
    """On ZeroGPU, where GPU workers are killed rather than ended, ``spaces``' own removal of the extracted package."""
    if isinstance(source, Package):
        return contextlib.nullcontext()
    from spaces.config import Config

    if not Config.zero_gpu:
        return contextlib.nullcontext()
    from spaces.zero.torch import aoti

    return getattr(aoti, "_register_aoti_cleanup", contextlib.nullcontext)()


def build_package(exported, path: str) -> tuple[str, dict]:
    """``aoti_compile_and_package``'s two halves, with the library's executable-stack flag cleared between them, as
    ``spaces.aoti_compile`` does (newer glibc refuses to ``dlopen`` such a library), and a library that carries its
    own C++ runtime refused; returns the package and the weights to hand to ``load_constants``."""
    import torch
    from torch._inductor.package.package import package_aoti

    options = dict(OUTSIDE_WEIGHTS)
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 10):
        options["aot_inductor.package_constants_on_disk_format"] = "pickle_weights"
    else:
        options["aot_inductor.package_constants_on_disk"] = True
    args, kwargs = exported.example_inputs
    artifacts = torch._inductor.aot_compile(exported.module(), args, kwargs, options=options)
    files = [f for f in artifacts if isinstance(f, str)]
    for name in files:
        if name.endswith(".so"):
            elf.clear_executable_stack(name)
            if elf.carries_own_cxx_runtime(name):
                from torch._inductor.cpp_builder import get_cpp_compiler

                # Seen on an H200 host whose CXX linked libstdc++ statically: the loader segfaults in std::regex.
                raise RuntimeError(
                    f"the ahead-of-time library links its own copy of the C++ runtime, not the shared libstdc++ "
                    f"torch uses, so loading it would crash: the compiler {get_cpp_compiler()} links libstdc++ "
                    f"statically; set CXX to one that links it dynamically (the system g++, /usr/bin/g++)"
                )
    package_aoti(path, files)
    weights = next(a for a in artifacts if not isinstance(a, str))
    return path, {name: weights.get_weight(name)[0] for name in weights}


# A loader that crashes takes its process with it, so it is tried first in a child of its own.
LOAD_PROBE = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1])"


def probe_load(package: str) -> None:
    """Raise (so ``prepare`` falls back) unless a child process loads ``package``: a loader that segfaults (seen for a
    one-op program, from a compiler ``build_package`` now refuses) would end the Space instead of one decoding mode."""
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", LOAD_PROBE, package], capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        reason = probe.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"AOTInductor's loader failed in a probe process (exit {probe.returncode}): {reason[0]}")
