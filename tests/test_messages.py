"""The MIME bytes we write by hand, read back by the standard library's parser: what a
mail client sees must be exactly what was rendered."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace

from nurture.delivery.mime import build_message
from nurture.delivery.transports import SmtpTransport

TRICKY_TEXT = (
    "Hi Zoë,\n"
    ".a line that starts with a dot\n"
    "From here on, a line that starts with From\n"
    "trailing spaces   \n"
    "tab\tinside and = signs = 3D\n" + "a long line " * 20 + "\n--=_not-a-boundary\n"
    "emoji 🍞 and CRLF\r\nend"
)
TRICKY_HTML = (
    '<p style="color:#333">Crème brûlée &amp; <a href="https://x.example/c?a=1&b=2">go</a></p>'
)


def build(**overrides):
    fields = dict(
        sender='"Maya at Crumb & Co" <hello@crumb.example>',
        to="Zoë Ünal <zoe@example.com>",
        subject="Zoë, your 🍞 guide: O'Brien & Co",
        html=TRICKY_HTML,
        text=TRICKY_TEXT,
        list_id="from-curious-to-customer",
        list_name="From curious to customer",
        unsubscribe_url="https://news.crumb.example/u/TOKEN",
    )
    fields.update(overrides)
    return build_message(**fields)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_headers_read_back_as_written():
    envelope = build(extra_headers={"X-Broadcast": "Décembre"})
    msg = parse(envelope.data)
    assert msg["From"].addresses[0].display_name == "Maya at Crumb & Co"
    assert msg["From"].addresses[0].addr_spec == "hello@crumb.example"
    assert msg["To"].addresses[0].display_name == "Zoë Ünal"
    assert str(msg["Subject"]) == "Zoë, your 🍞 guide: O'Brien & Co"
    assert msg["Message-ID"] == envelope.message_id
    assert envelope.message_id.endswith("@crumb.example>")
    assert msg["List-Id"] == "From curious to customer <from-curious-to-customer.crumb.example>"
    assert msg["List-Unsubscribe"] == "<https://news.crumb.example/u/TOKEN>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Broadcast"] == "Décembre"
    assert msg["Date"].datetime is not None
    assert (envelope.sender, envelope.recipient) == ("hello@crumb.example", "zoe@example.com")


def test_both_parts_decode_to_what_was_rendered():
    msg = parse(build().data)
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_payload()
    for part, subtype in ((plain, "plain"), (html, "html")):
        assert part.get_content_type() == f"text/{subtype}"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content_charset() == "utf-8"
    expected_text = TRICKY_TEXT.replace("\r\n", "\n")
    assert plain.get_content().replace("\r\n", "\n") == expected_text
    assert html.get_content().replace("\r\n", "\n") == TRICKY_HTML


def test_wire_format_is_seven_bit_crlf_with_short_lines():
    data = build().data
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")  # no bare LF
    assert b"\r" not in data.replace(b"\r\n", b"")  # no bare CR
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_a_line_break_in_a_header_value_cannot_forge_a_header():
    msg = parse(
        build(
            subject="Hello\r\nBcc: victim@example.com", to="x@example.com\nBcc: y@example.com"
        ).data
    )
    assert msg["Bcc"] is None
    assert "Bcc" in str(msg["Subject"])  # kept as text, on the one line


def test_the_server_receives_the_bytes_as_built_dots_and_all(sink):
    """SMTP doubles a line's leading dot on the way and the server undoes it; addresses
    go out as given, whether bare or quoted."""
    envelope = build()
    assert b"\r\n.a line that starts with a dot" in envelope.data
    quoted = replace(envelope, recipient='"zoe unal"@example.com')
    transport = SmtpTransport(sink.url)
    try:
        transport.send(envelope)
        transport.send(quoted)
    finally:
        transport.close()
    assert [(m.sender, m.recipients, m.data) for m in sink.messages] == [
        ("hello@crumb.example", ["zoe@example.com"], envelope.data),
        ("hello@crumb.example", ['"zoe unal"@example.com'], envelope.data),
    ]
