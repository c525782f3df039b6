import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import PaveBadPayload
from worker.pave.payload import (
    LENIENT_PARSE_MAX_BYTES,
    TRAILING_COMMA_BUDGET,
    decode_json,
    loads_without_trailing_commas,
    parse_integer,
    parse_results,
    parse_session,
    parse_timestamp,
)

SAMPLE = (Path(__file__).parent / "pave_sample_session.json").read_bytes()


def test_pave_published_sample_parses_despite_its_trailing_comma() -> None:
    with pytest.raises(ValueError):
        json.loads(SAMPLE)  # the published sample really is invalid JSON
    snapshot = parse_session(SAMPLE, expected_key="XXX-ABCDE12345")
    assert snapshot.status == "COMPLETE"
    assert snapshot.active is True
    assert snapshot.inspect_started_at == dt.datetime(2021, 5, 25, 11, 51, 49, tzinfo=dt.UTC)
    assert snapshot.inspect_ended_at == dt.datetime(2021, 5, 25, 11, 56, 5, tzinfo=dt.UTC)
    assert snapshot.updated_at == dt.datetime(2021, 5, 25, 11, 59, 20, tzinfo=dt.UTC)
    assert snapshot.vehicle is not None
    assert snapshot.vehicle["odom_reading"] == 100945
    assert snapshot.vehicle["year"] == 2017
    assert snapshot.vehicle["odom_unit"] == "KILOMETRES"
    assert snapshot.options is not None and snapshot.options["sms"]["by"] == "Steve's Test Dealer"


def body(**fields: object) -> bytes:
    return json.dumps({"session_key": "ABC-1", "status": "IDLE", **fields}).encode()


def test_vehicle_missing_null_or_partial() -> None:
    assert parse_session(body()).vehicle is None
    assert parse_session(body(vehicle=None)).vehicle is None
    assert parse_session(body(vehicle=[])).vehicle is None
    assert parse_session(body(vehicle={"vin": "5N1"})).vehicle == {"vin": "5N1"}


def test_odometer_forms() -> None:
    assert parse_integer("100,945") == 100945
    assert parse_integer("1 234 567") == 1234567
    assert parse_integer(12) == 12
    assert parse_integer(12.0) == 12
    assert parse_integer("twelve") is None
    assert parse_integer(True) is None
    vehicle = parse_session(body(vehicle={"odom_reading": "n/a"})).vehicle
    assert vehicle == {"odom_reading": "n/a"}  # kept as sent when it is not a number


def test_timestamps_with_and_without_microseconds_and_zone() -> None:
    expected = dt.datetime(2021, 5, 25, 11, 51, 49, tzinfo=dt.UTC)
    assert parse_timestamp("2021-05-25T11:51:49.000000Z") == expected
    assert parse_timestamp("2021-05-25T11:51:49Z") == expected
    assert parse_timestamp("2021-05-25T13:51:49+02:00") == expected
    assert parse_timestamp("2021-05-25 11:51:49") == expected
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(None) is None
    assert parse_timestamp(12345) is None


def test_unknown_status_and_extra_fields_are_data() -> None:
    snapshot = parse_session(body(status="WAITING CONFIRM", brand_new_field={"x": 1}))
    assert snapshot.status == "WAITING CONFIRM"


@pytest.mark.parametrize(
    "garbage, reason",
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b'{"session_key": "ABC-1", "status": "IDL', "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (b'"COMPLETE"', "expected a JSON object"),
        (b'{"session_key": "ABC-1"}', "no status"),
        (b'{"session_key": "ABC-1", "status": 7}', "no status"),
        (b'{"session_key": "ABC-1", "status": "   "}', "no status"),
        (b'{"session_key": "ABC-1", "status": "' + b"X" * 65 + b'"}', "longer than"),
        (b'{"session_key": 5, "status": "IDLE"}', "not a string"),
        (b'{"session_key": "OTHER-1", "status": "IDLE"}', "another session_key"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_garbage_is_a_clear_bad_payload(garbage: bytes, reason: str) -> None:
    with pytest.raises(PaveBadPayload, match=reason):
        parse_session(garbage, expected_key="ABC-1")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_session_or_a_bad_payload(data: bytes) -> None:
    try:
        snapshot = parse_session(data)
    except PaveBadPayload as exc:
        assert str(exc)
    else:
        assert isinstance(snapshot.status, str) and snapshot.status


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["session_key", "status", "active", "created_at", "updated_at",
                     "inspect_started_at", "inspect_ended_at", "vehicle", "options", "x"]),
    json_values,
))
def test_any_json_object_gives_a_session_or_a_bad_payload(document: dict[str, object]) -> None:
    try:
        snapshot = parse_session(json.dumps(document))
    except PaveBadPayload:
        return
    assert snapshot.status == str(document["status"]).strip()
    assert snapshot.vehicle is None or isinstance(snapshot.vehicle, dict)


# -- the lenient parse, bounded (issue #12) --------------------------------------------

LIST_OF_ONES = b"1," * 48_000  # 96 KB


def test_a_large_answer_only_json5_could_read_is_refused() -> None:
    """98 KB with one quirk that only JSON5 reads (a single-quoted key): JSON5 took 5 to
    9 s over it, in the event loop, and read it."""
    answer = b'{"session_key": "ABC-1", "status": "IDLE", "pad": [' + LIST_OF_ONES + b"1], 'x': 1}"
    assert 95_000 < len(answer) < 100_000
    with pytest.raises(PaveBadPayload, match="too large for the lenient parse"):
        parse_session(answer)


def test_trailing_commas_are_mended_at_any_size() -> None:
    answer = b'{"session_key": "ABC-1", "status": "IDLE", "pad": [' + LIST_OF_ONES + b"],}"
    assert len(answer) > LENIENT_PARSE_MAX_BYTES
    assert parse_session(answer).status == "IDLE"


def with_trailing_commas(document: object) -> str:
    """`document` as JSON with a comma after the last item of every object and array."""
    return re.sub(r"([^\[{,\s])(?=\n\s*[}\]])", r"\1,", json.dumps(document, indent=1))


def test_results_with_a_trailing_comma_in_every_object_are_read() -> None:
    """Each comma mended costs a strict parse up to it, so there is a limit (below); a
    few hundred in a document of 10 KB are well within it."""
    results = {"inspection": {"worst_grade": 3},
               "photos": [{"id": n, "url": f"https://x/{n}.jpg", "tags": ["a", "b"]}
                          for n in range(100)]}
    text = with_trailing_commas(results)
    assert len(re.findall(r",\s*[}\]]", text)) > 200 and len(text) > LENIENT_PARSE_MAX_BYTES
    assert parse_results(text) == results


def test_commas_inside_strings_are_left_alone() -> None:
    text = '{"a": "x,}", "b": ["y, ]", "\\",]", "\\\\",],}'
    assert loads_without_trailing_commas(text) == {"a": "x,}", "b": ["y, ]", '",]', "\\"]}


@pytest.mark.parametrize("text", ["[,]", "{,}", "[1,,]", '{"a": 1,,}', '{"a": 1, "b"}'])
def test_only_commas_after_a_value_are_mended(text: str) -> None:
    with pytest.raises(ValueError):
        loads_without_trailing_commas(text)


def test_mending_stops_at_its_budget() -> None:
    """Each comma costs a parse up to it: commas far into a large answer are mended only
    while the characters re-parsed stay within the budget."""
    pad = '{"pad": "' + " " * (TRAILING_COMMA_BUDGET // 3) + '", "a": '
    assert loads_without_trailing_commas(pad + "[[1,],]}")["a"] == [[1]]
    with pytest.raises(ValueError):
        loads_without_trailing_commas(pad + "[[[[1,],],],]}")
    with pytest.raises(PaveBadPayload, match="too large for the lenient parse"):
        parse_results(pad + "[[[[1,],],],]}")


def test_a_small_answer_with_other_quirks_still_gets_json5() -> None:
    answer = b"{session_key: 'ABC-1', status: 'IDLE', // JSON5, not JSON\n}"
    assert len(answer) < LENIENT_PARSE_MAX_BYTES
    assert parse_session(answer).status == "IDLE"


@pytest.mark.parametrize("link, kept", [
    ("https://dev.paveinspect.com/valet/XXX-ABCDE12345/?l=en", True),
    ("http://pave.test/x", True), ("javascript:alert(1)", False), ("ftp://x", False),
    ("https://x.example/" + "a" * 2000, False), ("https://x.example/a b", False),
    ("https://x.example/\n", False), (42, False), (None, False), ({"url": "x"}, False),
])
def test_the_capture_link_is_an_http_url_or_nothing(link: object, kept: bool) -> None:
    document = decode_json(SAMPLE)  # PAVE's sample, its trailing comma and all
    document["redirect_url"] = link
    parsed = parse_session(json.dumps(document))
    assert parsed.redirect_url == (link if kept else None)
