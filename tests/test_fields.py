"""Custom fields and the address policy, on every path that takes them."""

from __future__ import annotations

import html
from dataclasses import replace

import pytest
from sqlalchemy import select

from nurture.cli import cli
from nurture.people.segments import audience_clause
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber
from nurture.web import create_app

FIELDS = ('signup_fields = ["company"]\n[fields]\ncompany = "text"\nemployees = "number"\n'
          'vip = "bool"\nrenewal = "date"\n')  # fmt: skip
GREETING = """name: greet
trigger: signup
steps:
  - id: hello
    after: 0m
    stage: education
    subject: "Hello {{ subscriber.attributes.company }}!"
    template: greet/hello
"""


@pytest.fixture
def declared(workspace):
    toml = workspace / "nurture.toml"
    toml.write_text(toml.read_text() + FIELDS)
    return workspace


@pytest.fixture
def app(settings, declared):
    app = create_app(replace(settings, api_key="k" * 32, subscribe_limit="1000 per minute"))
    yield app
    app.extensions["nurture"].background.stop()


def invoke(runner, env, *args):
    return runner.invoke(cli, list(args), env=env)


def attributes(settings, email: str) -> dict:
    with session_scope(settings) as session:
        return session.scalar(select(Subscriber.attributes).where(Subscriber.email == email))


def test_add_and_set_check_each_value_by_its_type(runner, env, settings, declared):
    result = invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed",
                    "--attr", "company=Crumb & Co", "--attr", "employees=12.0",
                    "--attr", "vip=yes", "--attr", "renewal=2027-01-31")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert attributes(settings, "ana@example.com") == {
        "company": "Crumb & Co", "employees": "12", "vip": "true", "renewal": "2027-01-31"
    }  # fmt: skip
    result = invoke(runner, env, "subscribers", "set", "ana@example.com", "employees=2.5",
                    "vip=no", "renewal=")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert attributes(settings, "ana@example.com") == {
        "company": "Crumb & Co", "employees": "2.5", "vip": "false"
    }  # fmt: skip
    refusals = [
        (
            ("plan=pro",),
            "unknown field 'plan': declared fields are company, employees, renewal, vip",
        ),
        (("employees=lots",), "employees: 'lots' is not a number"),
        (("renewal=31/01/2027",), "renewal: '31/01/2027' is not a date (like 2026-05-31)"),
        (("vip=maybe",), "vip: 'maybe' is not a bool"),
        (("company=" + "x" * 201,), "is not a text (at most 200 characters)"),
        (("company",), "'company' is not NAME=VALUE"),
    ]
    for pairs, message in refusals:
        result = invoke(runner, env, "subscribers", "set", "ana@example.com", *pairs)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    result = invoke(runner, env, "subscribers", "add", "bo@example.com", "--attr", "plan=pro")
    assert result.exit_code == 1 and "unknown field 'plan'" in result.output
    assert attributes(settings, "bo@example.com") is None


def test_segments_match_what_is_stored(runner, env, settings, declared):
    invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed",
           "--attr", "employees=50", "--attr", "vip=true", "--attr", "company=Crumb")  # fmt: skip
    invoke(runner, env, "subscribers", "add", "bo@example.com", "--confirmed",
           "--attr", "employees=5")  # fmt: skip
    for segment, expected in [("attr:employees=50", ["ana@example.com"]),
                              ("attr:vip=true", ["ana@example.com"]),
                              ("attr:company=Crumb", ["ana@example.com"]),
                              ("attr:employees", ["ana@example.com", "bo@example.com"])]:  # fmt: skip
        with session_scope(settings) as session:
            found = sorted(session.scalars(select(Subscriber.email)
                                           .where(audience_clause(settings, segment))))  # fmt: skip
        assert found == expected, segment


def test_templates_see_declared_fields_and_validate_catches_a_typo(
    runner, env, settings, declared, sink
):
    for other in (declared / "sequences").glob("*.yaml"):
        other.unlink()  # one sequence, so the daily cap sends its step at once
    (declared / "sequences" / "greet.yaml").write_text(GREETING)
    page = declared / "templates" / "email" / "greet"
    page.mkdir()
    (page / "hello.html").write_text("<p>Hi</p>\n<p>From {{ subscriber.attributes.compnay }}</p>\n")
    result = invoke(runner, env, "validate")
    assert result.exit_code == 1
    assert ("templates/email/greet/hello.html:2: undefined: subscriber.attributes has no "
            "attribute 'compnay' (did you mean 'subscriber.attributes.company'?)"
            ) in result.output  # fmt: skip
    (page / "hello.html").write_text("<p>Hi</p>\n<p>From {{ subscriber.attributes.company }}</p>\n")
    assert invoke(runner, env, "validate").exit_code == 0
    # a declared field a subscriber lacks renders empty at send time
    invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    invoke(runner, env, "subscribers", "add", "bo@example.com", "--confirmed",
           "--attr", "company=Crumb & Co")  # fmt: skip
    assert invoke(runner, env, "send-due").exit_code == 0
    subjects = {m.recipients[0]: m.message["Subject"] for m in sink.messages}
    assert "Hello !" in subjects.values() and "Hello Crumb & Co!" in subjects.values()


def test_signup_accepts_only_signup_fields(app, settings):
    client = app.test_client()
    ok = client.post("/subscribe", json={"email": "ana@example.com", "company": " Crumb\x00 "})
    assert ok.status_code == 200, ok.json
    form = client.post("/subscribe", data={"email": "bo@example.com", "company": "Bo Ltd"})
    assert form.status_code == 200
    app.extensions["nurture"].background.drain()
    assert attributes(settings, "ana@example.com") == {"company": "Crumb"}
    assert attributes(settings, "bo@example.com") == {"company": "Bo Ltd"}
    refused = client.post("/subscribe", json={"email": "cy@example.com", "employees": 5})
    assert refused.status_code == 400
    assert refused.json["fields"]["form"] == (
        "field 'employees' is declared but a signup may not set it: add it to signup_fields "
        "in nurture.toml (a signup takes email, first_name, timezone, sequence, tags, company)"
    )
    unknown = client.post("/subscribe", json={"email": "cy@example.com", "shoe": 5})
    assert unknown.json["fields"]["form"] == (
        "unknown field 'shoe': a signup takes email, first_name, timezone, sequence, tags, company"
    )
    long = client.post("/subscribe", json={"email": "cy@example.com", "company": "x" * 300})
    assert long.status_code == 400 and "company" in long.json["fields"]
    assert attributes(settings, "cy@example.com") is None


@pytest.mark.parametrize("address", ["zoë@example.com", "δοκιμή@παράδειγμα.δοκιμή"])
def test_a_non_ascii_local_part_is_refused_on_every_path(
    runner, env, settings, app, tmp_path, address
):
    message = "letters outside ASCII before the @ need SMTPUTF8"
    result = invoke(runner, env, "subscribers", "add", address, "--confirmed")
    assert result.exit_code == 1 and message in result.output
    path = tmp_path / "people.csv"
    path.write_text(f"email\n{address}\n", encoding="utf-8")
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert f"people.csv:2: '{address}' cannot be mailed: {message}" in result.output
    client = app.test_client()  # visitors are told in plain words, operators the reason
    visitor = ("This address has letters we can't send to yet (like é or ü before the @). "
               "Please use another address.")  # fmt: skip
    as_json = client.post("/subscribe", json={"email": address})
    assert as_json.status_code == 400 and as_json.json["fields"]["email"] == visitor
    as_form = client.post("/subscribe", data={"email": address})
    page = html.unescape(as_form.get_data(as_text=True))
    assert as_form.status_code == 400 and visitor in page and "SMTPUTF8" not in page
    api = client.post("/api/events", json={"email": address, "event": "demo_booked"},
                      headers={"Authorization": "Bearer " + "k" * 32})  # fmt: skip
    assert api.status_code == 400 and message in api.json["error"]
    with session_scope(settings) as session:
        assert session.scalars(select(Subscriber.email)).all() == []


def test_an_international_domain_is_stored_in_ascii_on_every_path(
    runner, env, settings, app, tmp_path
):
    invoke(runner, env, "subscribers", "add", "ana@Bücher.example", "--confirmed")
    path = tmp_path / "people.csv"
    path.write_text("email\nbo@bücher.example\n", encoding="utf-8")
    invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    client = app.test_client()
    assert client.post("/subscribe", json={"email": "cy@bücher.example"}).status_code == 200
    assert client.post("/subscribe", data={"email": "di@bücher.example"}).status_code == 200
    app.extensions["nurture"].background.drain()
    with session_scope(settings) as session:
        stored = sorted(session.scalars(select(Subscriber.email)))
    assert stored == [f"{n}@xn--bcher-kva.example" for n in ("ana", "bo", "cy", "di")]
    api = client.post("/api/events", json={"email": "ana@bücher.example", "event": "demo_booked"},
                      headers={"Authorization": "Bearer " + "k" * 32})  # fmt: skip
    assert api.status_code == 201 and api.json["email"] == "ana@xn--bcher-kva.example"
    shown = invoke(runner, env, "subscribers", "show", "ana@bücher.example")
    assert shown.exit_code == 0 and "ana@xn--bcher-kva.example" in shown.output


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[fields]\nplan = "string"\n', "[fields] plan = 'string': a type is one of text, number"),
        ('[fields]\nitems = "text"\n', "[fields] 'items' is not a field name"),
        ('signup_fields = ["plan"]\n[fields]\ncity = "text"\n',
         "signup_fields names 'plan', which [fields] does not declare (declared: city)"),
    ],
)  # fmt: skip
def test_a_wrong_fields_table_is_one_clear_error(runner, env, workspace, toml, message):
    (workspace / "nurture.toml").write_text(toml)
    result = invoke(runner, env, "subscribers", "add", "ana@example.com", "--attr", "city=Leeds")
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
