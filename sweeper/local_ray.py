"""The local Ray instance a driver starts (or the cluster it joins), private to that driver, and the
cleanup of what a dead driver of the same study left behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from sweeper.errors import StudyError
from sweeper.reaper import alive, kill_leftover_ray, remove_leftovers, start_watchdog
from sweeper.study import Study

__all__ = ["RaySession", "check_resources", "kill_leftover_ray", "ray_temp_dir", "start", "stop"]


def ray_temp_dir(results_dir: Path) -> Path:
    """The prefix of every Ray folder of one study's drivers: `/tmp/sweeper-ray-<hash of the results
    folder>`; each driver adds `-<its pid>`. Short, because Ray's unix socket paths (about 107 bytes in
    all) live inside it."""
    digest = hashlib.sha256(str(results_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"sweeper-ray-{digest}"


def driver_ray_dir(results_dir: Path) -> Path:
    return Path(f"{ray_temp_dir(results_dir)}-{os.getpid()}")


@dataclass
class RaySession:
    temp_dir: Path | None  # this driver's local Ray folder; None when joined to a cluster
    tune_dir: Path  # Tune's own experiment files: private to the driver, removed with it
    watchdog: Any = None


def check_resources(study: Study, address: str | None) -> None:
    """Refuse, before anything is written, a study asking more of each trial than this machine has."""
    if address is not None:
        return  # checked against the cluster once joined (`start`)
    cores = os.cpu_count() or 1
    if study.resources.cpu > cores:
        raise StudyError(
            f"{study.source}: resources.cpu={study.resources.cpu:g} but this machine has {cores} cores; "
            f"at most {cores} per trial (or join a cluster with --address)"
        )
    gpus = _local_gpus() if study.resources.gpu else 0
    if study.resources.gpu and not gpus:
        raise StudyError(
            f"{study.source}: resources.gpu={study.resources.gpu:g} but this machine has no CUDA GPU; "
            "set resources.gpu: 0, or join a cluster with GPUs (--address)"
        )
    if study.resources.gpu > gpus:
        raise StudyError(
            f"{study.source}: resources.gpu={study.resources.gpu:g} but this machine has {gpus} GPUs"
        )


def start(results_dir: Path, address: str | None, study: Study, previous: dict | None = None) -> RaySession:
    """Join the cluster at `address`, or start a local instance in a folder of this driver's own.

    `previous` is what the study's last driver wrote in its lock file: if it died on this host without
    stopping its Ray, its processes and folder go first."""
    check_resources(study, address)
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        _check_cluster(study, address)
        return RaySession(None, Path(tempfile.mkdtemp(prefix="sweeper-tune-")))
    _remove_dead_drivers_ray(results_dir, previous or {})
    temp_dir = driver_ray_dir(results_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    watchdog = start_watchdog(os.getpid(), temp_dir)
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
    return RaySession(temp_dir, temp_dir / "tune", watchdog)


def stop(session: RaySession | None) -> None:
    """Shut Ray down; no process or folder of this driver's Ray outlives it."""
    ray.shutdown()
    if session is None:
        return
    shutil.rmtree(session.tune_dir, ignore_errors=True)
    if session.temp_dir is None:
        return
    remove_leftovers(session.temp_dir)  # the watchdog names the folder too: it goes with the rest
    if session.watchdog is not None:
        session.watchdog.wait(timeout=5)


def _remove_dead_drivers_ray(results_dir: Path, previous: dict) -> None:
    """What a driver killed with SIGKILL left: its own Ray folder (named in the lock file), and the
    shared folders that versions before private folders used. Only called while holding the lock."""
    folder = previous.get("ray_dir")
    if folder and previous.get("host") == socket.gethostname() and not alive(int(previous.get("pid", 0))):
        remove_leftovers(Path(folder))
    for legacy in (results_dir.resolve() / ".ray", ray_temp_dir(results_dir)):
        remove_leftovers(legacy)


def _check_cluster(study: Study, address: str) -> None:
    total = ray.cluster_resources()
    for key, wanted in (("CPU", study.resources.cpu), ("GPU", study.resources.gpu)):
        if wanted and wanted > total.get(key, 0):
            ray.shutdown()
            raise StudyError(
                f"{study.source}: resources.{key.lower()}={wanted:g} per trial but the cluster at {address} "
                f"has {total.get(key, 0):g} {key}s in all"
            )


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0
