"""Conversion and schemas, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import ConversionError, json_schema
from taskwarden.convert import Signature, from_json, to_json
from tests.tasks import Box, Color, Page, Point, add_points, area, make_page, needs_url


def test_dataclass_round_trip_and_errors_name_the_path() -> None:
    page = Page(url="u", status=200, tags=["a"])
    assert from_json(to_json(page), Page) == page
    with pytest.raises(ConversionError) as e:
        from_json({"url": "u", "status": "200"}, Page, "payload.page")
    assert e.value.path == "payload.page.status"
    with pytest.raises(ConversionError) as e:
        from_json([{"url": "u"}], list[Page], "payload.pages")
    assert e.value.path == "payload.pages[0].status"
    assert e.value.reason == "required"
    with pytest.raises(ConversionError) as e:
        from_json({"url": "u", "status": 1, "extra": 1}, Page)
    assert e.value.path == "value.extra"


def test_pydantic_typeddict_enum_optional() -> None:
    assert from_json({"x": 1, "y": 2}, Point) == Point(x=1, y=2)
    assert to_json(Point(x=1, y=2)) == {"x": 1, "y": 2}
    with pytest.raises(ConversionError) as e:
        from_json({"x": 1}, Point, "payload.a")
    assert e.value.path == "payload.a.y"
    assert from_json({"width": 2, "height": 3}, Box) == {"width": 2.0, "height": 3.0}
    assert from_json("blue", Color) is Color.BLUE
    assert from_json(None, int | None) is None
    assert from_json(3.0, int) == 3
    with pytest.raises(ConversionError):
        from_json(True, int)
    assert from_json({"1": "a"}, dict[int, str]) == {1: "a"}
    assert from_json([1, "b"], tuple[int, str]) == (1, "b")


def test_handler_signature_payload_and_decode() -> None:
    sig = Signature(make_page.fn)
    assert sig.payload(("u",), {"tags": ["t"]}) == {"url": "u", "tags": ["t"]}
    assert sig.decode({"url": "u"}) == {"url": "u"}
    with pytest.raises(ConversionError) as e:
        sig.decode({"status": 1})
    assert e.value.path == "payload.url"
    with pytest.raises(ConversionError) as e:
        sig.decode({"url": "u", "nope": 1})
    assert e.value.path == "payload.nope"
    with pytest.raises(TypeError):
        make_page.payload()  # type: ignore[call-arg]


def test_schema_from_signature() -> None:
    schema = needs_url.signature.schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["url"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["depth"] == {"type": "integer", "default": 1}
    page = schema["properties"]["page"]["anyOf"]
    assert {"$ref": "#/$defs/Page"} in page and {"type": "null"} in page
    assert schema["$defs"]["Page"]["required"] == ["url", "status"]
    pydantic_schema = add_points.signature.schema()
    assert pydantic_schema["properties"]["a"] == {"$ref": "#/$defs/Point"}
    assert pydantic_schema["$defs"]["Point"]["required"] == ["x", "y"]
    typed: dict[str, Any] = area.signature.schema()
    assert typed["properties"]["color"]["enum"] == ["red", "blue"]
    assert json_schema(list[int]) == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "array",
        "items": {"type": "integer"},
    }
