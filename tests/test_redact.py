from palyra.errors import ProviderError
from palyra.redact import REDACTED, redact_secrets


def test_known_secret_of_any_shape_is_scrubbed() -> None:
    assert redact_secrets("key was plain-Secret-Value!", ["plain-Secret-Value"]) == (
        f"key was {REDACTED}!"
    )


def test_key_shapes_are_scrubbed_without_being_known() -> None:
    text = (
        "Incorrect API key provided: sk-proj-abcdefgh12345678. Authorization: Bearer abc.def.ghi123"
    )
    scrubbed = redact_secrets(text)
    assert "sk-proj" not in scrubbed and "abc.def.ghi123" not in scrubbed
    assert scrubbed.count(REDACTED) == 2


def test_ordinary_text_is_left_alone() -> None:
    text = "model gpt-4o-mini does not exist; task-force is not a key"
    assert redact_secrets(text) == text


def test_provider_errors_never_carry_a_key() -> None:
    error = ProviderError("Incorrect API key sk-ant-api03-secretsecret", provider_id="claude")
    assert "secretsecret" not in error.message
    assert "secretsecret" not in str(error.body())
