"""The local Ray instance a driver starts (or the cluster it joins), and the cleanup of what a killed
driver left behind."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import ray

from sweeper.errors import StudyError
from sweeper.study import Study


def ray_temp_dir(results_dir: Path) -> Path:
    """Ray's session folder: under the study's results folder when the path is short enough for Ray's
    unix sockets (about 107 bytes in all), else a folder in /tmp named after the results folder."""
    candidate = results_dir.resolve() / ".ray"
    if len(str(candidate)) <= 40:
        return candidate
    digest = hashlib.sha256(str(results_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"sweeper-ray-{digest}"


def kill_leftover_ray(temp_dir: Path) -> int:
    """Stop Ray processes of an earlier local session in `temp_dir` (a killed driver leaves some)."""
    marker = str(temp_dir)
    killed = 0
    proc = Path("/proc")
    if proc.exists():
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"{marker}/" in cmdline or cmdline.rstrip().endswith(marker) or f"{marker} " in cmdline:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
    else:
        killed = int(subprocess.run(["pkill", "-9", "-f", marker], check=False).returncode == 0)
    return killed


def check_resources(study: Study, address: str | None) -> None:
    """Refuse, before anything is written, a study asking for GPUs on a local machine that has none."""
    if address is None and study.resources.gpu and not _local_gpus():
        raise StudyError(
            f"{study.source}: resources.gpu={study.resources.gpu:g} but this machine has no CUDA GPU; "
            "set resources.gpu: 0, or join a cluster with GPUs (--address)"
        )


def start(results_dir: Path, address: str | None, study: Study) -> Path | None:
    """Join the cluster at `address`, or start a private local instance; returns its session folder."""
    check_resources(study, address)
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        return None
    temp_dir = ray_temp_dir(results_dir)
    kill_leftover_ray(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    trial_tmp = results_dir / ".tmp"
    trial_tmp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, private instance only
    os.environ["TMPDIR"] = str(trial_tmp)  # checkpoint and W&B leftovers of killed trials stay in the study
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_DEDUP_LOGS"] = "0"
    ray.init(
        num_cpus=os.cpu_count(),
        num_gpus=_local_gpus() if study.resources.gpu else 0,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        log_to_driver=False,
        logging_level="ERROR",
        configure_logging=True,
    )
    return temp_dir


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def stop(temp_dir: Path | None) -> None:
    ray.shutdown()
    if temp_dir is not None:
        kill_leftover_ray(temp_dir)
