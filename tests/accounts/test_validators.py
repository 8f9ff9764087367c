"""The check of a Hugging Face token's value, as typed."""

import pytest
from django.core.exceptions import ValidationError

from accounts import validators


def test_a_token_is_kept_without_the_white_space_around_it():
    assert validators.hf_token_value("  hf_abcdefgh\n") == "hf_abcdefgh"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "printable ASCII"),
        ("hf_ with spaces", "printable ASCII"),
        ("hf_é_not_ascii", "printable ASCII"),
        ("hf_\x07bell1234", "printable ASCII"),
        ("hf_1234", "too short"),
    ],
)
def test_a_value_that_cannot_be_a_token_is_refused(value, message):
    with pytest.raises(ValidationError, match=message):
        validators.hf_token_value(value)
