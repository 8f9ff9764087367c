"""The router's model list in OpenAI's shape."""

import pytest

from gateway import modellist
from gateway.converter import BadAnswer


def test_models_list_takes_the_openai_shape_and_keeps_extras():
    listing = modellist.models_list(
        {
            "object": "list",
            "data": [
                {"id": "org/a", "providers": [{"provider": "p", "pricing": {"input": 1}}], "created": 5},
                {"id": "b", "object": "something", "created": "yesterday"},
                {"no": "id"},
            ],
        }
    )
    assert listing == {
        "object": "list",
        "data": [
            {
                "id": "org/a",
                "object": "model",
                "created": 5,
                "owned_by": "org",
                "providers": [{"provider": "p", "pricing": {"input": 1}}],
            },
            {"id": "b", "object": "model", "created": 0, "owned_by": "b"},
        ],
    }
    assert modellist.models_list([{"id": "x/y"}])["data"][0]["id"] == "x/y"


def test_find_model_understands_provider_suffixes():
    listing = modellist.models_list({"data": [{"id": "org/a"}]})
    assert modellist.find_model(listing, "org/a")["id"] == "org/a"
    assert modellist.find_model(listing, "org/a:fastest")["id"] == "org/a"
    assert modellist.find_model(listing, "org/b") is None


@pytest.mark.parametrize("answer", [{"data": "x"}, "text", None, {"object": "list"}])
def test_a_list_that_is_no_list_cannot_be_relayed(answer):
    with pytest.raises(BadAnswer):
        modellist.models_list(answer)
