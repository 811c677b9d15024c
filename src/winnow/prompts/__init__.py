"""The prompt registry: named prompts per key with immutable versions and movable labels."""

from winnow.prompts.render import RenderedPrompt
from winnow.prompts.service import PromptRegistry
from winnow.prompts.template import render_messages, template_fields

__all__ = ["PromptRegistry", "RenderedPrompt", "render_messages", "template_fields"]
