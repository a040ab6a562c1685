"""Each Space built the way the Spaces runtime builds it: the folder ``sync`` uploads, a fresh virtualenv of the
Python its README names (from pyenv), ``pip install -r requirements.txt`` plus ``gradio==<sdk_version>``, then
``python app.py`` configured by Space variables alone, and a chat through gradio_client. The ``spaces`` package's
ZeroGPU code path runs in the same virtualenv as far as it goes without the platform.

The virtualenv is built once per (Python, requirements, Gradio) and kept in LORALLAMA_SPACE_VENVS (default
~/.cache/lorallama/space-venvs); LORALLAMA_FRESH_SPACE_VENV=1 builds it again. The first build downloads what the
runtime downloads (torch's CUDA build from PyPI: a few GB, a few minutes); later runs take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from lorallama.publishing import sync

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.heavy]
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
VENVS = Path(os.environ.get("LORALLAMA_SPACE_VENVS", Path.home() / ".cache" / "lorallama" / "space-venvs"))
_BUILD_LOCK = threading.Lock()


def readme_meta(folder: Path) -> dict:
    return yaml.safe_load(sync._front_matter((folder / "README.md").read_text(encoding="utf-8"))[0])


def pyenv_python(version: str) -> Path | None:
    """The pyenv Python closest to ``version``: the same X.Y (the newest patch release pyenv has)."""
    minor = ".".join(version.split(".")[:2])
    found = sorted(
        (p for p in PYENV.glob(f"{minor}.*") if re.fullmatch(rf"{re.escape(minor)}\.\d+", p.name)),
        key=lambda p: int(p.name.split(".")[2]),
    )
    return found[-1] / "bin" / "python" if found and (found[-1] / "bin" / "python").exists() else None


def space_venv(python: Path, requirements: str, gradio_version: str) -> Path:
    key = hashlib.sha256(f"{python}\n{requirements}\ngradio=={gradio_version}".encode()).hexdigest()[:16]
    venv = VENVS / key
    with _BUILD_LOCK:
        if (venv / ".built").is_file() and os.environ.get("LORALLAMA_FRESH_SPACE_VENV") != "1":
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        building = VENVS / f"{key}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(python), "-m", "venv", str(building)], check=True)
        req = building / "requirements.txt"
        req.write_text(requirements)
        out = subprocess.run(
            [
                str(building / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "-r",
                str(req),
                f"gradio=={gradio_version}",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert out.returncode == 0, (
            f"the Space's requirements do not install:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
        # A venv's scripts name its folder; the build runs `python -m` only, so moving it into place is safe.
        building.rename(venv)
        (venv / ".built").write_text(f"{python}\n")
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VARIABLES = {
    "finetome": lambda tiny: {"LORALLAMA_BASE": str(tiny), "LORALLAMA_ADAPTER": "none"},
    "marx": lambda tiny: {"LORALLAMA_BASE": str(tiny), "LORALLAMA_ADAPTER": "none", "LORALLAMA_BASE_ADAPTERS": "none"},
    "demo": lambda tiny: {"LORALLAMA_BASE": str(tiny), "LORALLAMA_ADAPTER": "none"},
    "compare": lambda tiny: {
        "LORALLAMA_BASE": str(tiny),
        "LORALLAMA_ADAPTERS_FINETOME": "none",
        "LORALLAMA_ADAPTERS_MARX": "none",
    },
}


@pytest.mark.parametrize("slug", sorted(VARIABLES))
def test_the_synced_space_builds_and_chats_on_the_runtimes_python(slug, tmp_path, tiny_chatml):
    from gradio_client import Client

    app = sync.stage_space(REPO, slug, tmp_path / slug)
    meta = readme_meta(app)
    python = pyenv_python(str(meta["python_version"]))
    if python is None:
        pytest.skip(f"no pyenv Python {meta['python_version']} on this machine (pyenv install it)")
    venv = space_venv(python, (app / "requirements.txt").read_text(), str(meta["sdk_version"]))
    py = venv / "bin" / "python"
    versions = subprocess.run(
        [
            str(py),
            "-c",
            "import sys, torch, gradio; print(sys.version.split()[0], torch.__version__, gradio.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pinned_torch = re.search(r"^torch==(\S+)", (app / "requirements.txt").read_text(), re.M).group(1)
    assert versions[0].startswith(".".join(str(meta["python_version"]).split(".")[:2]) + ".")
    assert versions[1].split("+")[0] == pinned_torch and versions[2] == str(meta["sdk_version"])

    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "SPACE_ID": f"fork/{slug}",
        "SPACE_HOST": f"fork-{slug}.hf.space",
        **VARIABLES[slug](tiny_chatml),
    }
    process = subprocess.Popen(
        [str(py), "app.py"], cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, "".join(lines)[-3000:]
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "config", timeout=2)
                break
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        client = Client(url, verbose=False, download_files=False)
        if slug == "compare":
            answers = client.predict("Hello", "", 8, 0, 1, 1, 0, api_name="/compare")
            assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
        else:
            answer = client.predict("Hello", api_name="/chat")
            assert isinstance(answer, str) and answer.strip()
        with urllib.request.urlopen(url + "lorallama/widget.js") as response:
            assert response.status == 200
        startup = next(line for line in lines if line.startswith("lorallama "))
        assert f"({app / 'lorallama'})" in startup  # the vendored copy runs, not this checkout
    finally:
        process.terminate()
        process.wait(timeout=30)


ZERO_SNIPPET = """
import spaces, torch
from lorallama.serving import ui
from lorallama.serving.chat import load_model
assert torch.cuda.is_available(), "ZeroGPU stands in for a GPU between calls"
cm = load_model({base!r})
print("device", next(cm.model.parameters()).device)
@ui.gpu()
def generate(n):
    yield n
print("wrapped", generate.__module__ != __name__ or hasattr(generate, "__wrapped__"))

# What spaces.aoti_compile returns, as the serving worker's Step reads it: its archive, and only the weights the
# program names. torch's loader is replaced here (a real package needs a compile; tests/test_gpu_decoding.py loads one).
import io
from spaces.zero.torch.aoti import ZeroGPUCompiledModel, ZeroGPUWeights
from lorallama.serving import ahead_of_time
compiled = ZeroGPUCompiledModel(io.BytesIO(b"package"), ZeroGPUWeights({{"w": torch.ones(2), "other": torch.ones(1)}}))
seen = []
class Program:
    def get_constant_fqns(self):
        return ["w"]
    def load_constants(self, weights, **how):
        seen.append((sorted(weights), how))
    def __call__(self, *args):
        return sum(args)
def load(archive, **how):
    seen.append((archive is compiled.archive_file, how))
    return Program()
torch._inductor.aoti_load_package = load
step = ahead_of_time.Step(compiled)
print("step", step(1, 2), step(3, 4), seen)
"""


def test_the_zerogpu_code_path_of_spaces_runs_until_it_needs_the_platform(tmp_path, tiny_chatml):
    """With ZeroGPU's variables set, ``spaces`` patches this torch (the version pinned for ZeroGPU) and our model
    load moves to its stand-in CUDA device: what happens in a ZeroGPU Space before the first GPU call. And the
    serving ``Step`` reads that ``spaces`` version's compiled model as it is: its archive, single-threaded, once."""
    app = sync.stage_space(REPO, "finetome", tmp_path / "finetome")
    meta = readme_meta(app)
    python = pyenv_python(str(meta["python_version"]))
    if python is None:
        pytest.skip(f"no pyenv Python {meta['python_version']} on this machine")
    venv = space_venv(python, (app / "requirements.txt").read_text(), str(meta["sdk_version"]))
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9",  # nothing answers: no GPU call is made here
        "HF_HUB_OFFLINE": "1",
    }
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", ZERO_SNIPPET.format(base=str(tiny_chatml))],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "device cuda:0" in out.stdout and "wrapped True" in out.stdout, out.stdout
    loaded_once = "[(True, {'run_single_threaded': True}), (['w'], {'check_full_update': True, 'user_managed': True})]"
    assert f"step 3 7 {loaded_once}" in out.stdout, out.stdout
