"""Small multipart forms are split by the app itself: the result must equal werkzeug's for every body."""

import io

import pytest
from werkzeug import formparser
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import RequestEntityTooLarge

from webapp.common.forms import SMALL_FORM_BYTES, FormDataParser
from webapp.errors import ValidationError

B = "b0undary"


def form(*parts: bytes, end: bytes = b"--" + B.encode() + b"--\r\n") -> bytes:
    return b"".join(b"--" + B.encode() + b"\r\n" + part + b"\r\n" for part in parts) + end


def field(name: str, value: bytes, extra: bytes = b"", params: str = "") -> bytes:
    """A part: its Content-Disposition (with ``params``), ``extra`` header lines, a blank line, ``value``."""
    return f'Content-Disposition: form-data; name="{name}"{params}\r\n'.encode() + extra + b"\r\n" + value


BODIES = {
    "plain fields": form(field("a", b"1"), field("b", b"two words"), field("a", b"again")),
    "empty value": form(field("a", b"")),
    "value with CRLFs and dashes": form(field("a", b"line\r\n--not-the-boundary\r\n\r\nend")),
    "file": form(field("f", b"\x89PNG\r\n\x00\xff", b"Content-Type: image/png\r\n", '; filename="a b.png"')),
    "empty file input": form(field("f", b"", b"Content-Type: application/octet-stream\r\n", '; filename=""')),
    "RFC 2231 file name": form(field("f", b"x", params="; filename*=UTF-8''caf%C3%A9.txt")),
    "latin-1 field": form(field("a", "café".encode("latin-1"), b"Content-Type: text/plain; charset=iso-8859-1\r\n")),
    "undecodable utf-8": form(field("a", b"\xff\xfe")),
    "padding after boundary": form(field("a", b"1")).replace(B.encode() + b"\r\n", B.encode() + b" \t\r\n", 1),
    "preamble and epilogue": b"preamble\r\n" + form(field("a", b"1")) + b"epilogue",
    "no closing boundary": form(field("a", b"1"), end=b""),
    "LF line breaks": form(field("a", b"1")).replace(b"\r\n", b"\n"),
    "folded header": form(field("a", b"1").replace(b"; name", b";\r\n name")),
    "no content-disposition": form(b"Content-Type: text/plain\r\n\r\nx"),
    "no name": form(b"Content-Disposition: form-data\r\n\r\nx"),
    "no headers": form(b"\r\nx"),
    "boundary inside a line": form(field("a", b"x--" + B.encode() + b"y")),
    "boundary after a bare LF": form(field("a", b"x\n--" + B.encode() + b"\r\n" + field("b", b"2"))),
    "only the closing boundary": b"--" + B.encode() + b"--\r\n",
    "garbage": b"\x00\x01 not a form",
}


def parse(parser_class, body: bytes, boundary: str = B, **limits):
    parser = parser_class(max_form_memory_size=limits.get("memory"), max_form_parts=limits.get("parts"))
    parser.cls = ImmutableMultiDict
    _, fields, files = parser.parse(io.BytesIO(body), "multipart/form-data", len(body), {"boundary": boundary})
    return (
        list(fields.items(multi=True)),
        [(k, f.filename, f.content_type, f.read()) for k, f in files.items(multi=True)],
    )


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_small_forms_parse_exactly_as_werkzeug_parses_them(body):
    """Fields, files, names, types and contents equal werkzeug's own result, well-formed body or not."""
    assert parse(FormDataParser, body) == parse(formparser.FormDataParser, body)


def test_a_part_header_that_is_not_utf8_is_kept_for_the_rules_to_refuse():
    """Where werkzeug answers an empty form (so every field seems missing), the bytes stay as surrogates; a body
    werkzeug parses with such a header is a 422 that says so."""
    body = form(field("a", b"1"), field("f", b"x", params='; filename="cafX.txt"')).replace(b"cafX", b"caf\xe9")
    fields, files = parse(FormDataParser, body)
    assert fields == [("a", "1")]
    assert files == [("f", "caf\udce9.txt", None, b"x")]
    with pytest.raises(ValidationError) as refused:
        parse(FormDataParser, body + b" " * SMALL_FORM_BYTES)
    assert "UTF-8" in refused.value.description


def test_plain_forms_are_split_without_werkzeugs_parser(monkeypatch):
    """The comparison above is not vacuous: plain bodies are split here, and yield their fields and files."""

    def refuse(*args):
        raise AssertionError("werkzeug's multipart parser was used")

    monkeypatch.setattr(formparser.MultiPartParser, "parse", refuse)
    fields, _ = parse(FormDataParser, BODIES["plain fields"])
    assert fields == [("a", "1"), ("a", "again"), ("b", "two words")]
    _, files = parse(FormDataParser, BODIES["file"])
    assert files == [("f", "a b.png", "image/png", b"\x89PNG\r\n\x00\xff")]
    for name in ("value with CRLFs and dashes", "RFC 2231 file name", "latin-1 field", "preamble and epilogue"):
        parse(FormDataParser, BODIES[name])


@pytest.mark.parametrize(
    ("limits", "parts"),
    [
        ({"parts": 2}, [field("a", b"1"), field("b", b"2"), field("c", b"3")]),
        ({"memory": 4}, [field("a", b"12345")]),
        ({"memory": 64}, [field("f", b"x" * 100, params='; filename="a.bin"')]),
    ],
    ids=["parts", "field memory", "body memory"],
)
def test_forms_over_a_limit_are_refused_as_werkzeug_refuses_them(limits, parts):
    """Too many parts, or a body over the memory limit (even one holding only a file): 413, as werkzeug answers."""
    body = form(*parts)
    for parser_class in (FormDataParser, formparser.FormDataParser):
        with pytest.raises(RequestEntityTooLarge):
            parse(parser_class, body, **limits)


def test_large_bodies_and_odd_boundaries_go_to_werkzeug():
    """Bodies over the small-form size and non-ASCII boundaries are werkzeug's alone."""
    large = form(field("a", b"x" * SMALL_FORM_BYTES))
    assert parse(FormDataParser, large) == parse(formparser.FormDataParser, large)
    assert parse(FormDataParser, BODIES["plain fields"], boundary="bé") == ([], [])
