"""Fixtures of the fine-tuning tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import running_worker
from winnow.config import Settings


@pytest.fixture
def ft_client(settings: Settings) -> Iterator[TestClient]:
    """The in-process app with a real job worker on a thread beside it."""
    from winnow.api import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client, running_worker(settings):
        yield client
