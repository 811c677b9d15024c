"""LangChain's ``ChatOpenAI(use_responses_api=True)`` against a real ``winnow serve``: invoke and
stream go through ``/v1/responses`` on demo-lm (LangChain's own parsing of the Response and of its
stream events), with a system message, multi-turn history and ``max_tokens``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.slow  # a real `winnow serve`


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    live = LiveServer(tmp_path_factory.mktemp("langchain-responses") / "data").start()
    key = live.cli("keys", "create", "langchain").stdout.split()[-1]
    yield live, key
    live.stop()


def _llm(served: tuple[LiveServer, str], max_tokens: int = 8) -> object:
    from langchain_openai import ChatOpenAI

    live, key = served
    return ChatOpenAI(
        model="demo-lm",
        base_url=f"{live.url}/v1",
        api_key=key,  # type: ignore[arg-type]
        use_responses_api=True,
        max_tokens=max_tokens,  # type: ignore[call-arg]
        temperature=0,
        max_retries=0,
    )


def test_invoke_goes_through_the_responses_api(served: tuple[LiveServer, str]) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = _llm(served)
    assert isinstance(llm, ChatOpenAI)
    first = llm.invoke([SystemMessage("Answer briefly."), HumanMessage("What is 17+25?")])
    assert isinstance(first, AIMessage) and first.text and first.id and first.id.startswith("resp_")
    assert first.response_metadata["model_name"] == "demo-lm"
    assert first.usage_metadata and 0 < first.usage_metadata["output_tokens"] <= 8
    again = llm.invoke([HumanMessage("What is 17+25?"), first, HumanMessage("And 1+1?")])
    assert isinstance(again, AIMessage) and again.text


def test_stream_goes_through_the_responses_api(served: tuple[LiveServer, str]) -> None:
    from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = _llm(served)
    assert isinstance(llm, ChatOpenAI)
    chunks = list(llm.stream([SystemMessage("Answer briefly."), HumanMessage("What is 17+25?")]))
    assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.text and any(c.text for c in chunks)
    assert whole.usage_metadata and 0 < whole.usage_metadata["output_tokens"] <= 8
    assert whole.response_metadata["status"] == "completed" and whole.response_metadata["model_name"] == "demo-lm"


def test_structured_output_through_the_responses_api(served: tuple[LiveServer, str]) -> None:
    """``with_structured_output`` sends ``text.format`` json_schema; demo-lm's answer is held to it."""
    from langchain_openai import ChatOpenAI

    llm = _llm(served, max_tokens=32)
    assert isinstance(llm, ChatOpenAI)
    schema = {
        "title": "Answer",
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    structured = llm.with_structured_output(schema, method="json_schema", strict=True)
    answer = structured.invoke("Is 17+25 equal to 42? Answer as JSON.")
    assert isinstance(answer, dict) and isinstance(answer["ok"], bool) and set(answer) == {"ok"}
