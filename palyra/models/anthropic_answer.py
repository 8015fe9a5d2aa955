"""JSON response formats on Anthropic: the answer tool (pure, no I/O).

Anthropic has no JSON mode. A response format is enforced the one way Anthropic can: a tool
(the "answer tool") whose input_schema is the client's schema (json_object: any object), and a
tool_choice that forces a call to it; the call's input is the answer, given back as the message
content with finish_reason "stop" (`anthropic_response.py`). With the client's own tools as
well, the model may call those or answer: tool_choice "auto" becomes "any" over the client's
tools and the answer tool (OpenAI's model too either calls a tool or answers in the schema);
"none" forces the answer tool; "required" or a named function forces that call, and the
response format has no answer to shape in that turn, so no answer tool is added.

`answer_tool` names the tool (the provider reads the call of that name back as the answer),
`answer_schema` is its input schema and `answer_tool_param` the tool as the translation
(`anthropic_request.py`) sends it, beside the tool_choice. What cannot be enforced this way (a
schema whose root is not an object, a JSON answer while thinking) is `anthropic_honour.py`'s
to name.
"""

from __future__ import annotations

import re
from typing import Any

from palyra.models.anthropic_wire import ToolParam
from palyra.types import ChatRequest, NamedToolChoice

# The answer tool's name when the json_schema names none Anthropic would take (or none is
# given: json_object).
ANSWER_TOOL = "json_answer"
ANSWER_TOOL_DESCRIPTION = (
    "Give your whole answer by calling this tool: its input is the answer, as JSON."
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def forced_call(request: ChatRequest) -> bool:
    """Whether the client forces a call to one of its own tools."""
    choice = request.tool_choice
    return bool(request.tools) and (choice == "required" or isinstance(choice, NamedToolChoice))


def answer_tool(request: ChatRequest) -> str | None:
    """The name of the tool whose forced call carries a JSON answer, or None when the
    request wants no JSON (or forces a call to a tool of its own, leaving no answer)."""
    request = request.functions_as_tools()
    response_format = request.response_format
    if response_format is None or response_format.type == "text" or forced_call(request):
        return None
    taken = {tool.function.name for tool in request.tools or []}
    spec = response_format.json_schema or {}
    name = spec.get("name") if response_format.type == "json_schema" else None
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        name = ANSWER_TOOL
    while name in taken:
        name = f"{name[:56]}_answer"
    return name


def answer_schema(request: ChatRequest) -> dict[str, Any] | None:
    """The answer tool's input schema: the client's json_schema (OpenAI wraps it as
    {"name", "schema", "strict"}; a bare schema is taken too), or any object for json_object.
    None when the schema's root is not an object, which a tool's input must be."""
    response_format = request.response_format
    spec = response_format.json_schema if response_format is not None else None
    if response_format is None or response_format.type != "json_schema" or not spec:
        return {"type": "object"}
    schema = spec["schema"] if isinstance(spec.get("schema"), dict) else spec
    if schema.get("type") == "object":
        return schema
    if "type" not in schema and isinstance(schema.get("properties"), dict):
        return {"type": "object", **schema}
    return None


def answer_tool_param(request: ChatRequest, name: str) -> ToolParam | None:
    """The answer tool named `name` (`answer_tool`) as the request sends it, or None when the
    json_schema's root is not an object (`answer_schema`)."""
    schema = answer_schema(request)
    if schema is None:
        return None
    description = ANSWER_TOOL_DESCRIPTION
    spec = request.response_format.json_schema if request.response_format else None
    if spec and isinstance(spec.get("description"), str) and spec["description"]:
        description += f" The answer: {spec['description']}"
    return {"name": name, "description": description, "input_schema": schema}
