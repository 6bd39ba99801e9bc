"""Reading of the push request body in `main`, before the envelope is parsed."""

from __future__ import annotations

import io
import json

import pytest
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Request

import main


def _request(
    body: bytes, length: int | None = None, terminated: bool = False
) -> Request:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    if terminated:
        # Set by servers that end the input stream at the body's end, such as
        # gunicorn for a chunked request.
        environ["wsgi.input_terminated"] = True
    return Request(environ)


def test_body_read_as_text():
    body = json.dumps({"message": {"data": "e30="}, "é": 1}, ensure_ascii=False)

    text = main._read_body(_request(body.encode(), len(body.encode())))

    assert text == body


def test_body_read_in_pieces(monkeypatch):
    monkeypatch.setattr(main, "_READ_CHUNK", 7)
    body = b'{"message": {"data": "' + b"A" * 100 + b'"}}'

    assert main._read_body(_request(body, len(body))) == body.decode()


@pytest.mark.parametrize(
    "body",
    [b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b'{"a": 1}'],
)
def test_text_parses_as_bytes_do(body):
    text = main._read_body(_request(body, len(body)))

    assert json.loads(text) == json.loads(body)


@pytest.mark.parametrize("body", [b'{"a": "\xff"}', b"\xef\xbb\xbf\xef\xbb\xbf{}"])
def test_undecodable_body_stays_bytes(body):
    assert main._read_body(_request(body, len(body))) == body


def test_short_body_disconnects_as_get_data_does():
    body = b'{"message": '

    with pytest.raises(ClientDisconnected):
        _request(body, len(body) + 50).get_data(cache=False)
    with pytest.raises(ClientDisconnected):
        main._read_body(_request(body, len(body) + 50))


def test_body_without_length_read_whole():
    body = b'{"a": 1}'

    assert main._read_body(_request(body, terminated=True)) == body.decode()
