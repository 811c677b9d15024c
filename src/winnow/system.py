"""Health probes: real psutil figures for /status, and the checks behind /ready."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import psutil

from winnow import __version__
from winnow.config import Thresholds
from winnow.db import Database
from winnow.schemas.platform import (
    CpuInfo,
    DetailedStatusResponse,
    DiskInfo,
    EnvironmentInfo,
    MemoryInfo,
    ReadinessChecks,
    ReadinessResponse,
    SystemInfo,
)

_MB = 1024 * 1024


def prime_cpu_counter() -> None:
    """psutil's first non-blocking cpu_percent() is meaningless; take it at start-up."""
    psutil.cpu_percent(interval=None)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def system_status(data_dir: Path, thresholds: Thresholds) -> DetailedStatusResponse:
    """Memory, disk (of the data dir's filesystem) and CPU, with warnings past the thresholds."""
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(_existing(data_dir)))
    cpu = psutil.cpu_percent(interval=None)
    warnings: list[str] = []
    if mem.percent >= thresholds.memory_warn_percent:
        warnings.append(f"memory usage {mem.percent:.1f}% >= {thresholds.memory_warn_percent}%")
    if disk.percent >= thresholds.disk_warn_percent:
        warnings.append(f"disk usage {disk.percent:.1f}% >= {thresholds.disk_warn_percent}% on {data_dir}")
    if cpu >= thresholds.cpu_warn_percent:
        warnings.append(f"cpu usage {cpu:.1f}% >= {thresholds.cpu_warn_percent}%")
    floors = []
    if mem.available < thresholds.min_memory_available_mb * _MB:
        floors.append(f"memory available {mem.available // _MB} MB < {thresholds.min_memory_available_mb} MB")
    if disk.free < thresholds.min_disk_free_mb * _MB:
        floors.append(f"disk free {disk.free // _MB} MB < {thresholds.min_disk_free_mb} MB on {data_dir}")
    warnings = floors + warnings
    status = "unhealthy" if floors else "degraded" if warnings else "healthy"
    return DetailedStatusResponse(
        status=status,
        version=__version__,
        system=SystemInfo(
            memory=MemoryInfo(total=mem.total, available=mem.available, percent=mem.percent, used=mem.used),
            disk=DiskInfo(total=disk.total, free=disk.free, used=disk.used, percent=disk.percent),
            cpu=CpuInfo(percent=cpu, count=psutil.cpu_count() or 1),
        ),
        environment=EnvironmentInfo(
            python_version=platform.python_version(),
            platform=platform.platform(terse=True) + f" ({sys.implementation.name})",
        ),
        warnings=warnings,
    )


def readiness(db: Database, data_dir: Path, thresholds: Thresholds, models_ready: bool = True) -> ReadinessResponse:
    """Ready when the database answers, memory and disk are above their floors, and a model can serve."""
    mem_ok = psutil.virtual_memory().available >= thresholds.min_memory_available_mb * _MB
    disk_ok = psutil.disk_usage(str(_existing(data_dir))).free >= thresholds.min_disk_free_mb * _MB
    checks = ReadinessChecks(memory_available=mem_ok, disk_available=disk_ok, database=db.ping(), models=models_ready)
    failing = [name for name, ok in checks.model_dump().items() if not ok]
    return ReadinessResponse(ready=not failing, checks=checks, failing=failing)
