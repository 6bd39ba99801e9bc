"""The function's settings from the environment."""

from __future__ import annotations

import pytest

from forwarder.config import load_settings
from forwarder.errors import ConfigError

BASE = {
    "MIXPANEL_PROJECT_ID": "3141592",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa.user",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "very-secret-value",
    "DEAD_LETTER_TOPIC": "projects/p/topics/dead",
}


def _settings(**changes):
    env = {**BASE, **changes}
    return load_settings(
        {key: value for key, value in env.items() if value is not None}
    )


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("us", "https://api.mixpanel.com"),
        ("EU", "https://api-eu.mixpanel.com"),
        ("in", "https://api-in.mixpanel.com"),
    ],
)
def test_region_selects_host(region, host):
    assert _settings(MIXPANEL_REGION=region).api_url == host


def test_unknown_region_rejected():
    with pytest.raises(ConfigError) as caught:
        _settings(MIXPANEL_REGION="asia")

    assert caught.value.variable == "MIXPANEL_REGION"


def test_token_authenticates_without_password():
    settings = _settings(
        MIXPANEL_SERVICE_ACCOUNT_USERNAME=None,
        MIXPANEL_SERVICE_ACCOUNT_SECRET=None,
        MIXPANEL_PROJECT_TOKEN="tok123",
    )

    assert (settings.username, settings.password) == ("tok123", "")


def test_token_and_service_account_rejected():
    with pytest.raises(ConfigError) as caught:
        _settings(MIXPANEL_PROJECT_TOKEN="tok123")

    assert "not both" in str(caught.value)


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "MIXPANEL_SERVICE_ACCOUNT_USERNAME"),
        ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "MIXPANEL_SERVICE_ACCOUNT_SECRET"),
        ("MIXPANEL_PROJECT_ID", "MIXPANEL_PROJECT_ID"),
        ("DEAD_LETTER_TOPIC", "DEAD_LETTER_TOPIC"),
    ],
)
def test_missing_variable_named(missing, variable):
    with pytest.raises(ConfigError) as caught:
        _settings(**{missing: None})

    assert caught.value.variable == variable
    assert "very-secret-value" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://example.com", "ftp://127.0.0.1", "http://10.0.0.1:80", "not a url"],
)
def test_api_url_plain_http_only_loopback(url):
    with pytest.raises(ConfigError) as caught:
        _settings(MIXPANEL_API_URL=url)

    assert caught.value.variable == "MIXPANEL_API_URL"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1", "https://proxy.example"]
)
def test_api_url_accepted(url):
    assert _settings(MIXPANEL_API_URL=url).api_url == url


def test_bad_deadline_rejected():
    with pytest.raises(ConfigError) as caught:
        _settings(RETRY_DEADLINE_SECONDS="ten")

    assert caught.value.variable == "RETRY_DEADLINE_SECONDS"


def test_repr_hides_secret():
    assert "very-secret-value" not in repr(_settings())
    assert "region=" in repr(_settings())


def test_rich_repr_hides_secret():
    # The rich library prints a msgspec Struct from its __rich_repr__.
    assert "very-secret-value" not in repr(list(_settings().__rich_repr__()))


def test_api_url_with_credential_rejected_unechoed():
    with pytest.raises(ConfigError) as caught:
        _settings(MIXPANEL_API_URL="https://sa:very-secret-value@proxy.example")

    assert caught.value.variable == "MIXPANEL_API_URL"
    assert "very-secret-value" not in str(caught.value)


def test_invalid_log_level_rejected():
    with pytest.raises(ConfigError) as caught:
        _settings(LOG_LEVEL="verbose")

    assert caught.value.variable == "LOG_LEVEL"


def test_range_error_without_exponent():
    with pytest.raises(ConfigError) as caught:
        _settings(MIXPANEL_MAX_BATCH_BYTES="99999999999")

    assert "10485760" in str(caught.value)
    assert "e+" not in str(caught.value)


def test_unicode_digit_project_id_rejected():
    with pytest.raises(ConfigError) as caught:
        _settings(MIXPANEL_PROJECT_ID="\uff11\uff12\uff13")

    assert caught.value.variable == "MIXPANEL_PROJECT_ID"


def test_secrets_include_basic_auth_form():
    import base64

    settings = _settings()
    basic = base64.b64encode(b"sa.user:very-secret-value").decode()

    assert basic in settings.secrets
