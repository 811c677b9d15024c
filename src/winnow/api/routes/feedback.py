"""POST /feedback (rate, label, comment on or correct a generation or an SDG row), GET /feedback
(list it) and GET /feedback/export (preference pairs or SFT examples as JSONL)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, PageDep, RuntimeDep
from winnow.api.routing import Router
from winnow.feedback.service import to_jsonl
from winnow.schemas.common import ErrorResponse
from winnow.schemas.feedback import FeedbackItem, FeedbackList, FeedbackRequest
from winnow.schemas.sdg import JOB_ID_PATTERN


class NDJSONResponse(Response):
    media_type = "application/x-ndjson"


router = Router(prefix="/feedback", tags=["Human feedback"])

_GIVE = """Judge one response: either a generation (`generation_id`, and `index` for a choice other than
the first: a /v1 response's `choices[i].index`) or one row of a completed SDG job's output (`job_id`, the
row's `id` and `index`). Give at least one of `rating` ("up"/"down", or 1-5 stars), `labels`, `comment`,
`corrected_response`. The prompt, response text and model are copied into the feedback, so exports
never need the generation again. A key may judge only its own generations and jobs (an admin: any).
A key's feedback on a response it has judged before updates that feedback (200; the fields given
replace theirs, the others stay): one feedback per key and response. New feedback is a 201."""

_EXPORT = """The feedback you may see as JSONL training data, grouped by prompt. Positive: thumbs up or
4-5 stars; negative: thumbs down or 1-2 stars.

- `preference` (TRL's DPO format): chosen = positive responses and every `corrected_response`;
  rejected = negative responses and the original of any corrected response (unless rated positive).
  One row per distinct (chosen, rejected) pair with chosen != rejected: `{"prompt", "chosen", "rejected"}`
  strings for a plain prompt, or conversational `{"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}` for a chat prompt.
- `sft`: each distinct positive or corrected response: `{"prompt", "completion"}` for a plain prompt,
  `{"messages": [...prompt, assistant message]}` for a chat prompt.

`X-Winnow-Rows` counts the rows; an empty export says why in `X-Winnow-Empty-Reason`."""


@router.post(
    "",
    summary="Give feedback on a generation or an SDG output row",
    description=_GIVE,
    status_code=201,
    response_model=FeedbackItem,
    responses={
        200: {"model": FeedbackItem, "description": "Updated: the key's earlier feedback on this response"},
        404: {"model": ErrorResponse, "description": "No such generation, job, row or choice index (or not yours)"},
        409: {
            "model": ErrorResponse,
            "description": "The generation was kept without its text (store_generations off), or the job "
            "has not completed",
        },
    },
)
async def give_feedback(body: FeedbackRequest, runtime: RuntimeDep, key: OtherKey, response: Response) -> FeedbackItem:
    given, created = await run_in_threadpool(runtime.feedback.create, body, key)
    if not created:
        response.status_code = 200
    return given


@router.get("", summary="List feedback, newest first", response_model=FeedbackList)
async def list_feedback(
    runtime: RuntimeDep,
    key: OtherKey,
    cursor: PageDep,
    generation_id: str | None = Query(None, max_length=64, description="Feedback on this generation"),
    job_id: str | None = Query(None, pattern=JOB_ID_PATTERN, description="Feedback on this SDG job's rows"),
    label: str | None = Query(None, max_length=64, description="Feedback carrying this label"),
) -> FeedbackList:
    page = await run_in_threadpool(
        lambda: runtime.feedback.list(key, cursor, generation_id=generation_id, job_id=job_id, label=label)
    )
    return FeedbackList(items=page.rows, count=len(page.rows), **page.cursor())


_JSONL: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSONL, one training example a line", "content": {"application/x-ndjson": {}}}
}


@router.get(
    "/export",
    summary="Export feedback as preference pairs (DPO) or SFT examples (JSONL)",
    description=_EXPORT,
    response_class=NDJSONResponse,
    responses=_JSONL,
)
async def export_feedback(
    runtime: RuntimeDep,
    key: OtherKey,
    format: Literal["preference", "sft"] = Query("preference", description="preference (DPO pairs) or sft"),
) -> NDJSONResponse:
    rows, why_empty = await run_in_threadpool(runtime.feedback.export, key, format)
    headers = {
        "Content-Disposition": f'attachment; filename="feedback-{format}.jsonl"',
        "X-Winnow-Rows": str(len(rows)),
    }
    if why_empty:
        headers["X-Winnow-Empty-Reason"] = why_empty
    return NDJSONResponse(to_jsonl(rows), headers=headers)
