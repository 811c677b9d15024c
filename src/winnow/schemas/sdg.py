"""Wire models of ``spec/synthetic_data_generation.yaml`` and the Llama Stack batch_inference
message types it refers to (see ``spec/README.md``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from winnow.schemas.common import Timestamp, WireModel


class UserMessage(WireModel):
    role: Literal["user"] = "user"
    content: str


class SystemMessage(WireModel):
    role: Literal["system"] = "system"
    content: str


class ToolResponseMessage(WireModel):
    role: Literal["ipython"] = "ipython"
    call_id: str
    tool_name: str
    content: str


class ToolCall(WireModel):
    call_id: str
    tool_name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class CompletionMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str
    stop_reason: Literal["end_of_turn", "end_of_message", "out_of_tokens"]
    tool_calls: list[ToolCall] = Field(default_factory=list)


class Message(
    RootModel[
        Annotated[
            UserMessage | SystemMessage | ToolResponseMessage | CompletionMessage,
            Field(discriminator="role"),
        ]
    ]
):
    """Any of the four batch_inference message types, told apart by ``role``."""


class Completion(RootModel[CompletionMessage]):
    """What one generation returned: a CompletionMessage."""


class PromptResponseScore(WireModel):
    id: str = Field(description="Carry forwarded from the user provided id from prompt.")
    index: int = Field(description="Index of the generation.")
    prompt: list[Message]
    response: Completion
    score: float = Field(description="Final score after filtering.")
    raw_score: float = Field(description="Raw score from the reward model.")


class FilteringFunction(WireModel):
    name: str = Field(description="A simple threshold or a pre-registered function")
    params: dict[str, Any] = Field(default_factory=dict)


class SyntheticDataGeneration(WireModel):
    job_id: str
    created: Timestamp
    status: str
    output_file_path: str | None = None
