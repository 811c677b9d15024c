"""Winnow's typed Python SDK, after openai-python: ``Winnow`` and ``AsyncWinnow`` with resources per
API area (``files``, ``sdg``, ``evals``, ``feedback``, ``models``, ``keys``), the server's own pydantic
models as answers, retries that honour ``Retry-After``, and one exception class per status.

    from winnow.client import Winnow

    with Winnow() as client:                      # WINNOW_URL, WINNOW_API_KEY
        prompts = client.files.upload("prompts.jsonl")
        job = client.sdg.submit(model="demo-lm", reward_model="demo-rm", prompts_path=prompts.path)
        client.sdg.wait(job.job_id)
        for row in client.sdg.rows(job.job_id):
            print(row.id, row.score)
"""

from winnow.client._client import AsyncWinnow, Winnow
from winnow.client.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BudgetExceeded,
    Conflict,
    MissingAPIKey,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    UnexpectedResponse,
    ValidationFailed,
    WinnowAPIError,
)
from winnow.client.resources import FeedbackExport
from winnow.schemas.prompts import PromptRef

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncWinnow",
    "AuthenticationError",
    "BudgetExceeded",
    "Conflict",
    "FeedbackExport",
    "MissingAPIKey",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PromptRef",
    "RateLimited",
    "ServerError",
    "UnexpectedResponse",
    "ValidationFailed",
    "Winnow",
    "WinnowAPIError",
]
