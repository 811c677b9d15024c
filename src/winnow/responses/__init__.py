"""OpenAI's Responses API over Winnow's chat completions: requests translated into chat requests,
chat answers (whole or streamed) translated back into Response objects and semantic events, and the
stored responses that ``previous_response_id`` continues."""

from winnow.responses.store import ResponseStore
from winnow.responses.translate import ChatTurn, Turn, chat_turn, response_object

__all__ = ["ChatTurn", "ResponseStore", "Turn", "chat_turn", "response_object"]
