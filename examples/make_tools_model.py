"""Write ``demo-lm-tools``: demo-lm's weights and tokenizer with a Hermes-style chat template that renders
``tools``, for the tests of tool calls on local models (none of the shipped demo models has one).

The template lists the tools as JSON in a system turn, writes an assistant's calls as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (as Hermes and Qwen models write
them, and as vLLM's hermes tool parser reads them) and a tool's answer as a
``<tool_response>...</tool_response>`` user turn. demo-lm's tokenizer has no newline token, so the
template writes none; its context is raised to 2048 tokens, as its tokens are characters.

    python examples/make_tools_model.py OUT_DIR        # default: examples/models/demo-lm-tools
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "models" / "demo-lm"

TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|system|>You may call these tools: <tools>"
    "{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools> To call one, answer "
    '<tool_call>{"name": <name>, "arguments": <arguments>}</tool_call>{% endif %}'
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] or '' }}"
    "{% for call in message['tool_calls'] or [] %}<tool_call>"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}'
    "</tool_call>{% endfor %}{{ eos_token }}"
    "{% elif message['role'] == 'tool' %}<|user|><tool_response>{{ message['content'] }}</tool_response>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write(out: Path) -> Path:
    """The model directory at ``out`` (made again from demo-lm each time)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("generation_config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(SOURCE / name, out / name)
    model = json.loads((SOURCE / "config.json").read_text())
    model["max_position_embeddings"] = 2048  # room for tools written out a character a token (RoPE: no table)
    (out / "config.json").write_text(json.dumps(model, indent=2) + "\n")
    config = json.loads((SOURCE / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(TEMPLATE)
    return out


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "models" / "demo-lm-tools"))
