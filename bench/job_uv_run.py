"""The job as the platform runs it: ``uv run`` of the model repo's train.py in a fresh environment, against the Hub double.

    python bench/job_uv_run.py            # needs uv (pip install uv) and the package registry; minutes

uv resolves train.py's PEP 723 header from the registry and installs the lorallama wheel from the double's
``resolve/main/job/…`` URL, as ``hf jobs uv run --with "lorallama @ …"`` does; the job runs in an empty folder with a
clean environment (no checkout, no PYTHONPATH), downloads its base model from the double, trains and pushes. What
the header resolves to is what a job gets: on Linux that is the registry's CUDA build of torch and Unsloth's stack
(about 6 GB of downloads on a cold cache), even on a CPU machine. Writes bench/results/job_uv_run.json: exit code,
seconds, what reached the repo (run.json's versions and backend included), the wheel's requirements, whether Gradio
was installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = "tester/uv-run"
BASE = "tester/tiny-base"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    sys.path.insert(0, str(ROOT / "tests"))
    from support.hub_double import HubDouble

    work = Path(tempfile.mkdtemp(prefix="uv-job-"))
    hub = HubDouble(root=work / "store").start()
    os.environ.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf"), HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1")
    import yaml

    from lorallama import hub as hub_mod
    from lorallama.names import wheel_name
    from lorallama.recipe import load_recipe
    from lorallama.training import jobs
    from support.recipes import write_recipe
    from support.tiny import make_tiny_llama

    base = make_tiny_llama(work / "tiny", "chatml")
    hub.seed_repo(BASE, {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()})
    path = write_recipe(work, base, max_steps=4, save_steps=2)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["base"] = BASE  # the job fetches its base from the Hub, as a real one does
    raw["hub"] = {"model_repo": REPO}
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(str(path))
    hub_mod.ensure_repo(REPO)
    with tempfile.TemporaryDirectory() as tmp:
        files = jobs.bundle(recipe, Path(tmp))
        wheel = Path(files[f"job/{wheel_name()}"])
        requires = [line for line in _metadata(wheel).splitlines() if line.startswith("Requires-Dist:")]
        hub_mod.upload_files(REPO, files, "Job bundle")

    job_dir = work / "job"
    job_dir.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work / "home"),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": hub.token,
        "HF_HOME": str(work / "job-hf"),
        "UV_CACHE_DIR": str(work / "uv-cache"),
        "PYTHONUNBUFFERED": "1",
        "UV_NATIVE_TLS": "1",  # the machine's certificate store (a proxy may sign the registry's certificates)
        "SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
    }
    wheel_url = f"{hub.url}/{REPO}/resolve/main/job/{wheel_name()}"
    command = [uv, "run", "--no-project", "--python", _base_python()]
    command += ["--with", f"lorallama @ {wheel_url}", f"{hub.url}/{REPO}/resolve/main/train.py", "--repo", REPO]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=job_dir, env=env, capture_output=True, text=True, timeout=args.timeout)
    seconds = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (work / "job.log").write_text(log)
    repo_files = hub.files(REPO)
    run = json.loads(repo_files["run.json"]) if "run.json" in repo_files else {}
    cache = work / "uv-cache"
    installed_gradio = any(cache.rglob("gradio-*.dist-info")) or any(cache.rglob("gradio/__init__.py"))
    result = {
        "returncode": proc.returncode,
        "seconds": round(seconds, 1),
        "finished": run.get("finished"),
        "global_step": run.get("global_step"),
        "hub_checkpoint": run.get("hub_checkpoint"),
        "versions": run.get("versions"),
        "backend": (run.get("backend") or {}).get("name"),
        "adapter_on_hub": "adapter_model.safetensors" in repo_files,
        "wheel_requires": requires,
        "gradio_installed": installed_gradio,
        "uv": subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip(),
        "log_tail": log[-3000:],
    }
    out = ROOT / "bench" / "results" / "job_uv_run.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=1))
    print(log[-1500:])
    hub.stop()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if proc.returncode == 0 and run.get("finished") else 1


def _metadata(wheel: Path) -> str:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode()


def _base_python() -> str:
    """An interpreter outside this project's virtual environment (uv makes its own)."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


if __name__ == "__main__":
    sys.exit(main())
