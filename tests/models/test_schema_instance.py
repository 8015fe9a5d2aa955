"""Instances of JSON Schemas: valid against the schema (checked by a real validator and by the
pydantic models that emitted the schemas), the same for the same seed."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Annotated, Any, Literal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, HttpUrl

from palyra.models.schema_instance import MAX_VALUES, SchemaError, instance, instance_json

jsonschema = pytest.importorskip("jsonschema")


def check(schema: dict[str, Any], value: Any) -> None:
    validator = jsonschema.validators.validator_for(schema)
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(value)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}(-\d{4})?$")]
    country: Literal["US", "CA"] = "US"


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Node(BaseModel):
    name: str
    children: list[Node] = []
    parent: Node | None = None


class Person(BaseModel):
    id: uuid.UUID
    name: str = Field(min_length=2, max_length=20)
    email: str = Field(json_schema_extra={"format": "email"})
    born: datetime.date
    seen: datetime.datetime
    at: datetime.time
    age: int = Field(ge=0, lt=130)
    score: float = Field(gt=0, le=1)
    tags: list[str] = Field(min_length=1, max_length=3)
    color: Color
    address: Address
    other_address: Address | None = None
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    pets: list[Cat | Dog]
    tree: Node
    scores: dict[str, int]
    pair: tuple[int, str]
    nickname: str | None
    version: Literal["v1"]
    website: HttpUrl
    wait: datetime.timedelta


@pytest.mark.parametrize("model", [Person, Node, Address])
@pytest.mark.parametrize("strict", [False, True], ids=["pydantic", "openai-strict"])
def test_pydantic_schemas_round_trip(model: type[BaseModel], strict: bool) -> None:
    schema = to_strict_json_schema(model) if strict else model.model_json_schema()
    for seed in ("a", "b", "extract the person from: Ada, 36", ""):
        value = instance(schema, seed)
        check(schema, value)
        model.model_validate(value)


def test_same_seed_same_value_other_seed_same_shape() -> None:
    schema = Person.model_json_schema()
    one, again, other = instance(schema, "x"), instance(schema, "x"), instance(schema, "y")
    assert one == again
    assert one != other
    assert set(one) == set(other)


def test_nested_optional_and_recursive_parts_end() -> None:
    value = instance(Node.model_json_schema(), "tree")
    depth = 0
    node = value
    while node.get("parent") is not None:
        node, depth = node["parent"], depth + 1
    assert 0 < depth < 10  # filled near the top, left out further down


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "format": "email"},
    {"type": "string", "format": "ipv4"},
    {"type": "string", "format": "ipv6"},
    {"type": "string", "format": "uri"},
    {"type": "string", "format": "hostname"},
    {"type": "string", "format": "date"},
    {"type": "string", "minLength": 40},
    {"type": "string", "maxLength": 3},
    {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
    {"type": "string", "pattern": r"^(foo|bar)+\.(txt|md)$"},
    {"type": "string", "pattern": "^[^abc]x+$", "minLength": 4},
    {"type": "string", "pattern": r"^(\w)\1$"},
    {"type": "integer", "minimum": 10, "maximum": 10},
    {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
    {"type": "integer", "minimum": 3, "multipleOf": 7},
    {"type": "integer", "maximum": -1000},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001},
    {"type": "number", "minimum": -5.5, "maximum": -5.25},
    {"type": "number", "minimum": 1, "exclusiveMinimum": True},  # draft 4
    {"type": ["string", "null"]},
    {"type": "null"},
    {"enum": ["a", 1, None, {"x": 1}]},
    {"const": {"fixed": [1, 2]}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 5},
    {"type": "array", "items": {"type": "boolean"}, "maxItems": 0},
    {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
    {"type": "object", "minProperties": 3, "additionalProperties": {"type": "number"}},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
    {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}]},
    {
        "oneOf": [
            {"type": "object", "properties": {"t": {"const": "x"}}, "required": ["t"]},
            {"type": "object", "properties": {"t": {"const": "y"}}, "required": ["t"]},
        ]
    },
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "string"}}, "required": ["b"]},
        ]
    },
    {
        "definitions": {"item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "array",
        "items": {"$ref": "#/definitions/item"},
    },
    {
        "$defs": {"a~b/c": {"type": "string", "format": "date"}},
        "type": "object",
        "properties": {"when": {"$ref": "#/$defs/a~0b~1c", "description": "a date"}},
        "required": ["when"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"value": {"type": "integer"}, "next": {"$ref": "#"}},
        "required": ["value"],
    },
    {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["kids"],
    },
    {"properties": {"implied": {"items": {"minimum": 2}}}},
    {},
    True,
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_handwritten_schemas(schema: Any) -> None:
    for seed in ("s1", "s2", "s3"):
        check(schema if isinstance(schema, dict) else {}, instance(schema, seed))


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (False, "admits no value"),
        (
            {"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]},
            "more than",
        ),
        ({"$ref": "#/$defs/missing"}, "points at nothing"),
        ({"$ref": "https://example.com/schema.json"}, "not a reference into the same schema"),
        ({"enum": []}, "enum is empty"),
        ({"type": "array", "minItems": 10**9}, f"at most {MAX_VALUES}"),
        ({"type": "array", "minItems": 3, "maxItems": 2}, "minItems 3 cannot be met"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
        ({"type": "string", "minLength": 10**7}, "minLength"),
        ({"type": "string", "pattern": "("}, "not a regular expression"),
        ({"type": "object", "required": ["a"], "additionalProperties": False}, "not allowed"),
    ],
)
def test_schemas_without_a_buildable_value_are_named(schema: Any, says: str) -> None:
    with pytest.raises(SchemaError, match=says.replace("(", r"\(")):
        instance(schema, "seed")


_KEYWORDS = st.sampled_from(
    [
        "type",
        "properties",
        "required",
        "items",
        "prefixItems",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "enum",
        "const",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "pattern",
        "format",
        "additionalProperties",
        "minProperties",
        "uniqueItems",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["object", "array", "string", "integer", "number", "null", "#", "#/$defs/a"])
    | st.text(max_size=8)
)
_SCHEMAS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYWORDS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_SCHEMAS)
def test_any_schema_gives_a_value_or_a_schema_error(schema: Any) -> None:
    try:
        text = instance_json(schema, "fuzz")
    except SchemaError:
        return
    orjson.loads(text)
