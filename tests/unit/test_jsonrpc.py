"""Parsing and building JSON-RPC messages: what a peer may send, and what is refused with which code."""

from __future__ import annotations

import pytest

from mcp_gateway import jsonrpc
from mcp_gateway.errors import ProtocolError
from mcp_gateway.protocol import INVALID_REQUEST, PARSE_ERROR


def refusal(data: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        jsonrpc.parse_incoming(data)
    return caught.value


@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}',
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
        b'{"jsonrpc":"2.0","id":7,"result":{}}',
        b'{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    ],
)
def test_requests_notifications_and_responses_are_accepted_as_bytes_or_text(data: bytes | str) -> None:
    assert jsonrpc.parse_incoming(data)["jsonrpc"] == "2.0"


def test_fields_the_gateway_does_not_know_survive_parsing_and_encoding() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"method":"x/y","params":{"_meta":{"vendor/z":[1,{"a":null}]}},"extra":true}'
    assert jsonrpc.loads(jsonrpc.dumps(jsonrpc.parse_incoming(data))) == jsonrpc.loads(data)


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b'{"jsonrpc":"2.0",}', b"\xff\xfe"])
def test_what_is_not_json_is_a_parse_error(data: bytes) -> None:
    assert refusal(data).code == PARSE_ERROR


def test_a_batch_is_refused_as_an_invalid_request_that_says_to_send_one_message() -> None:
    error = refusal(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]')
    assert error.code == INVALID_REQUEST and "one JSON-RPC message" in error.message


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'"a string"', "must be an object"),
        (b"42", "must be an object"),
        (b'{"id":1,"method":"ping"}', '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', '"method" must be a non-empty string'),
        (b'{"jsonrpc":"2.0","id":1,"method":5}', '"method" must be a non-empty string'),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', '"id" must be a string or an integer'),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', '"id" must be a string or an integer'),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', '"id" must be a string or an integer'),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', '"params" must be an object'),
        (b'{"jsonrpc":"2.0","result":{}}', "missing id"),
        (b'{"jsonrpc":"2.0","id":false,"result":{}}', "missing id"),
        (b'{"jsonrpc":"2.0","id":1}', "neither a request, a notification nor a response"),
    ],
)
def test_a_malformed_envelope_is_an_invalid_request_naming_what_is_wrong(data: bytes, says: str) -> None:
    error = refusal(data)
    assert error.code == INVALID_REQUEST and says in error.message


def test_a_message_nested_deeper_than_the_limit_is_refused_before_anything_walks_it() -> None:
    arguments = "[" * 70 + "]" * 70
    error = refusal('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":' + arguments + "}}")
    assert error.code == INVALID_REQUEST and "64 levels" in error.message


def test_a_message_exactly_at_the_depth_limit_is_accepted() -> None:
    # The envelope is level 1 and params level 2: 62 more arrays reach 64.
    inner = "[" * 62 + "]" * 62
    assert jsonrpc.parse_incoming('{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":' + inner + "}}")
    with pytest.raises(ProtocolError):
        inner = "[" * 63 + "]" * 63
        jsonrpc.parse_incoming('{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":' + inner + "}}")


def test_brackets_inside_strings_do_not_make_a_shallow_message_too_deep() -> None:
    message = jsonrpc.parse_incoming(b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"' + b"[{" * 100 + b'"}}')
    assert message["params"]["s"].startswith("[{")


def test_the_kind_of_a_message_is_told_by_method_and_id() -> None:
    request, note = jsonrpc.request(1, "ping"), jsonrpc.notification("notifications/initialized")
    response = jsonrpc.result(1, {})
    assert (jsonrpc.is_request(request), jsonrpc.is_notification(request), jsonrpc.is_response(request)) == (
        True,
        False,
        False,
    )
    assert (jsonrpc.is_request(note), jsonrpc.is_notification(note), jsonrpc.is_response(note)) == (False, True, False)
    assert (jsonrpc.is_request(response), jsonrpc.is_notification(response), jsonrpc.is_response(response)) == (
        False,
        False,
        True,
    )


def test_built_messages_leave_params_out_when_there_are_none() -> None:
    assert jsonrpc.request(3, "ping") == {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    assert jsonrpc.notification("n", {"a": 1}) == {"jsonrpc": "2.0", "method": "n", "params": {"a": 1}}


def test_an_error_response_carries_the_errors_code_message_and_data() -> None:
    built = jsonrpc.error(None, ProtocolError(INVALID_REQUEST, "bad", {"why": "x"}))
    assert built["id"] is None
    assert built["error"] == {"code": INVALID_REQUEST, "message": "bad", "data": {"why": "x"}}


def test_params_and_meta_that_are_not_objects_read_as_empty() -> None:
    assert jsonrpc.params_of({"params": [1]}) == {} and jsonrpc.params_of({}) == {}
    assert jsonrpc.meta_of({"_meta": "x"}) == {} and jsonrpc.meta_of({"_meta": {"k": 1}}) == {"k": 1}
