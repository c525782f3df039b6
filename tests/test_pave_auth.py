import datetime as dt

from worker.pave.auth import PaveCredentials, format_timestamp, sign_token

# Computed independently: printf '%s' 'dealer-user:key-123@2021-05-30T12:49:19Z' |
#   openssl dgst -sha256 -hmac 'secret-456'
VECTOR = "f9a28c3f5a5232d3fbee379aeac11c118443742eb5b10c1f92b0a021e14e4e0e"
MOMENT = dt.datetime(2021, 5, 30, 12, 49, 19, 654321, tzinfo=dt.UTC)


def test_token_matches_an_independent_hmac() -> None:
    token = sign_token(username="dealer-user", api_key="key-123", api_secret="secret-456",
                       timestamp="2021-05-30T12:49:19Z")
    assert token == VECTOR


def test_timestamp_is_the_documented_iso_form_without_fraction() -> None:
    assert format_timestamp(MOMENT) == "2021-05-30T12:49:19Z"
    other_zone = MOMENT.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert format_timestamp(other_zone) == "2021-05-30T12:49:19Z"


def test_signed_headers_sign_exactly_the_timestamp_sent() -> None:
    credentials = PaveCredentials(api_key="key-123", username="dealer-user",
                                  api_secret="secret-456")
    headers = credentials.headers(MOMENT)
    assert headers == {"API-Key": "key-123", "API-Token": VECTOR,
                       "API-Timestamp": "2021-05-30T12:49:19Z"}


def test_a_fresh_token_for_each_moment() -> None:
    credentials = PaveCredentials(api_key="k", username="u", api_secret="s")
    later = MOMENT + dt.timedelta(seconds=1)
    assert credentials.headers(MOMENT)["API-Token"] != credentials.headers(later)["API-Token"]


def test_static_token_is_sent_when_there_is_no_secret() -> None:
    credentials = PaveCredentials(api_key="k", api_token="static-token")
    assert credentials.headers(MOMENT)["API-Token"] == "static-token"


def test_credentials_never_show_their_secret() -> None:
    credentials = PaveCredentials(api_key="k", username="u", api_secret="s3cr3t-value",
                                  api_token="t0ken-value")
    assert "s3cr3t-value" not in repr(credentials)
    assert "t0ken-value" not in str(credentials)
