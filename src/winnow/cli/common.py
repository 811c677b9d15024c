"""Options and helpers every command shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from winnow.config import CONFIG_ENV_VAR, Settings
from winnow.runtime import Runtime

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (also WINNOW_CONFIG)", exists=True, dir_okay=False),
]


def load_settings(config: Path | None) -> Settings:
    """Settings with ``config`` as the YAML layer, for this process and the processes it starts."""
    if config is not None:
        os.environ[CONFIG_ENV_VAR] = str(config.resolve())
    return Settings()


def open_runtime(config: Path | None) -> Runtime:
    return Runtime.open(load_settings(config))
