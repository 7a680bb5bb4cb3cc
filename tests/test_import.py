"""`subscribers import`: what lands in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from nurture import clock
from nurture.cli import cli
from nurture.content.sequences import catalog_for
from nurture.errors import SubscriberError
from nurture.people import importing
from nurture.people.subscribers import ConsentInfo, confirm, get, normalize_email
from nurture.store.engine import session_scope
from nurture.store.tables import Consent, Delivery, Enrollment, Subscriber, Tag

GEAR = """name: gear
trigger: tag:gear
steps:
  - id: one
    after: 0m
    stage: education
    subject: "Gear for {{ subscriber.attributes.company }}"
    template: curious-to-customer/welcome
"""
FIELDS = 'signup_fields = ["company"]\n[fields]\ncompany = "text"\nemployees = "number"\n'


def invoke(runner, env, *args):
    return runner.invoke(cli, list(args), env=env)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def subscribers(settings) -> dict[str, Subscriber]:
    with session_scope(settings) as session:
        return {s.email: s for s in session.scalars(select(Subscriber))}


def enrolments(settings) -> set[tuple[str, str]]:
    with session_scope(settings) as session:
        rows = session.execute(select(Subscriber.email, Enrollment.sequence)
                               .join(Enrollment, Enrollment.subscriber_id == Subscriber.id))  # fmt: skip
        return {(e, s) for e, s in rows}


def test_a_line_separator_inside_a_quoted_cell_smuggles_no_one(runner, env, settings, tmp_path):
    for sep in ("\u2028", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"):
        path = write(tmp_path / "people.csv",
                     f'email,first_name\ncarol@example.com,"Carol{sep}smuggled@example.org"\n')  # fmt: skip
        result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
        assert result.exit_code == 0, result.output
    assert set(subscribers(settings)) == {"carol@example.com"}
    assert "smuggled" in subscribers(settings)["carol@example.com"].first_name


def test_control_characters_never_reach_the_database_or_subject(
    runner, env, settings, tmp_path, sink
):
    path = write(tmp_path / "people.csv",
                 "email,first_name\n"
                 "ana@example.com,A\x1bn\x07a\x7f\n"
                 "bo@exa\x00mple.com,Bo\n"
                 "cy@example.com,C\x00y\n")  # fmt: skip
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert "people.csv:3: " in result.output and "Traceback" not in result.output
    assert "Imported 2 new, 0 already known, 1 bad rows." in result.output
    subs = subscribers(settings)
    assert (subs["ana@example.com"].first_name, subs["cy@example.com"].first_name) == ("Ana", "Cy")
    result = invoke(runner, env, "subscribers", "add", "di@example.com", "--confirmed",
                    "--first-name", "D\x1b[2Ji\x00")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert invoke(runner, env, "send-due").exit_code == 0
    subjects = [m.message["Subject"] for m in sink.messages]
    assert "Welcome, Ana: marketing and sales are two jobs" in subjects
    assert "Welcome, D[2Ji: marketing and sales are two jobs" in subjects
    for raw in (m.data for m in sink.messages):
        assert not any(c in raw for c in (b"\x00", b"\x07", b"\x1b", b"\x7f"))


def test_blank_rows_are_skipped_and_a_semicolon_file_gets_a_hint(runner, env, settings, tmp_path):
    path = write(
        tmp_path / "people.csv", "email,first_name\r\n\r\nana@example.com,Ana\r\n,\r\n\r\n"
    )
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Imported 1 new, 0 already known, 0 bad rows." in result.output
    path = write(tmp_path / "semi.csv", "email;first_name\nbo@example.com;Bo\n")
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert "separated by ';'" in result.output and "Traceback" not in result.output
    assert set(subscribers(settings)) == {"ana@example.com"}


def test_import_keeps_fields_tags_and_enrols_like_add(runner, env, settings, workspace, tmp_path):
    (workspace / "sequences" / "gear.yaml").write_text(GEAR)
    (workspace / "nurture.toml").write_text((workspace / "nurture.toml").read_text() + FIELDS)
    invoke(runner, env, "subscribers", "add", "old@example.com", "--confirmed")
    path = write(tmp_path / "people.csv",
                 "email,first_name,tags,company,employees\n"
                 'ana@example.com,Ana,gear,"Crumb, Ltd",12\n'
                 "bo@example.com,Bo,,,\n"
                 "old@example.com,,gear,Old Co,\n"
                 "cy@example.com,Cy,,,many\n"
                 "\n"
                 "di@example.com,Di,gear vip,,3.0\n")  # fmt: skip
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert "people.csv:5: employees: 'many' is not a number" in result.output
    assert "Imported 3 new, 1 already known, 1 bad rows." in result.output
    subs = subscribers(settings)
    assert subs["ana@example.com"].attributes == {"company": "Crumb, Ltd", "employees": "12"}
    assert subs["di@example.com"].attributes == {"employees": "3"}
    assert subs["old@example.com"].attributes == {"company": "Old Co"}
    assert subs["bo@example.com"].attributes == {}
    signup = "from-curious-to-customer"
    assert enrolments(settings) == {
        ("old@example.com", signup), ("old@example.com", "gear"),
        ("ana@example.com", signup), ("ana@example.com", "gear"),
        ("bo@example.com", signup),
        ("di@example.com", signup), ("di@example.com", "gear"),
    }  # fmt: skip
    with session_scope(settings) as session:
        tags = set(session.execute(select(Subscriber.email, Tag.name).join(Tag)).all())
        consents = session.scalar(select(func.count()).select_from(Consent)
                                  .where(Consent.source == "import"))  # fmt: skip
    assert ("di@example.com", "vip") in tags and ("old@example.com", "gear") in tags
    assert consents == 6  # requested + confirmed for each of the three new ones
    # importing again changes nothing and enrols no one twice
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert "Imported 0 new, 4 already known, 1 bad rows." in result.output
    assert len(enrolments(settings)) == 7

    out = tmp_path / "out.csv"
    assert invoke(runner, env, "subscribers", "export", str(out)).exit_code == 0
    header, *lines = out.read_text().splitlines()
    assert header == ("email,first_name,timezone,tags,status,created_at,confirmed_at,"
                      "company,employees")  # fmt: skip
    assert any(line.startswith("ana@example.com,Ana,,gear,") and line.endswith(',"Crumb, Ltd",12')
               for line in lines)  # fmt: skip
    # an export imports back as it is
    result = invoke(runner, env, "subscribers", "import", str(out))
    assert "Imported 0 new, 4 already known, 0 bad rows." in result.output


def test_an_undeclared_column_is_refused_with_the_declared_ones(runner, env, settings, tmp_path):
    path = write(tmp_path / "people.csv", "email,plan\nana@example.com,pro\n")
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert "column 'plan' is not a declared field: declared fields are none" in result.output
    assert subscribers(settings) == {}


def test_without_confirmed_each_new_address_is_pending_with_one_confirmation(
    runner, env, settings, tmp_path, sink
):
    rows = "".join(f"p{i}@example.com,P{i}\n" for i in range(2500))
    path = write(tmp_path / "people.csv", "email,first_name\n" + rows)
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert "Imported 2500 new, 0 already known, 0 bad rows." in result.output
    with session_scope(settings) as session:
        statuses = set(session.scalars(select(Subscriber.status)))
        confirms = session.scalar(select(func.count()).select_from(Delivery)
                                  .where(Delivery.kind == "confirm"))  # fmt: skip
    assert statuses == {"pending"} and confirms == 2500
    assert len(sink.messages) == 2500
    assert enrolments(settings) == set()


def test_suppressed_addresses_are_reported_by_line(runner, env, settings, tmp_path):
    invoke(runner, env, "subscribers", "add", "gone@example.com", "--confirmed")
    invoke(runner, env, "subscribers", "forget", "gone@example.com", "--yes")
    path = write(tmp_path / "people.csv", "email\nana@example.com\ngone@example.com\n")
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert "people.csv:3: gone@example.com is suppressed" in result.output
    assert set(subscribers(settings)) == {"ana@example.com"}


def test_add_with_a_tag_starts_the_tag_sequence_once(runner, env, settings, workspace, sink):
    (workspace / "sequences" / "gear.yaml").write_text(GEAR)
    result = invoke(runner, env, "subscribers", "add", "x@example.com", "--confirmed",
                    "--tag", "gear")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ("x@example.com", "gear") in enrolments(settings)
    invoke(runner, env, "subscribers", "tag", "x@example.com", "gear")
    invoke(runner, env, "subscribers", "add", "x@example.com", "--tag", "gear")
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Enrollment)
                              .where(Enrollment.sequence == "gear")) == 1  # fmt: skip
    # a pending subscriber's tag starts its sequence when they confirm
    invoke(runner, env, "subscribers", "add", "p@example.com", "--tag", "gear")
    assert ("p@example.com", "gear") not in enrolments(settings)
    with session_scope(settings) as session:
        confirm(session, catalog_for(settings.sequences_dir), get(session, "p@example.com"),
                clock.now(), ConsentInfo())  # fmt: skip
    assert ("p@example.com", "gear") in enrolments(settings)


def test_common_headers_are_recognised(runner, env, settings, workspace, tmp_path):
    (workspace / "nurture.toml").write_text(FIELDS)
    path = write(tmp_path / "people.csv",
                 "E-mail,First Name,Time Zone,Tags,Company\n"
                 "ana@example.com,Ana,Europe/Paris,gear,Crumb\n")  # fmt: skip
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    ana = subscribers(settings)["ana@example.com"]
    assert (ana.first_name, ana.timezone, ana.attributes) == ("Ana", "Europe/Paris",
                                                              {"company": "Crumb"})  # fmt: skip
    for header in ("Email Address", "email-address", "EMAIL"):
        again = write(tmp_path / "again.csv", f"{header}\nbo@example.com\n")
        assert invoke(runner, env, "subscribers", "import", str(again)).exit_code == 0
    assert "bo@example.com" in subscribers(settings)


def test_a_misspelt_column_gets_a_rename_hint(runner, env, settings, tmp_path):
    path = write(tmp_path / "people.csv", "email,frist name\nana@example.com,Ana\n")
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert ("people.csv:1: column 'frist name' is not a declared field (rename it to "
            "first_name?)") in result.output  # fmt: skip
    assert subscribers(settings) == {}


def test_no_progress_bar_when_stderr_is_not_a_terminal(runner, env, settings, tmp_path):
    path = write(tmp_path / "people.csv", "email\nana@example.com\n")
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0
    assert result.output == "Imported 1 new, 0 already known, 0 bad rows.\n"


def test_rows_written_in_bulk_match_what_add_writes(
    runner, env, settings, workspace, tmp_path, monkeypatch
):
    """Each new row of a bulk batch gets what `add --confirmed` gives one address: an
    active subscriber with its own link key, two consents, a first-round enrolment."""
    monkeypatch.setattr(importing, "BATCH", 2)  # batch boundaries inside a small file
    invoke(runner, env, "subscribers", "add", "one@example.com", "--confirmed")
    invoke(runner, env, "subscribers", "add", "gone@example.com", "--confirmed")
    invoke(runner, env, "subscribers", "forget", "gone@example.com", "--yes")
    path = write(tmp_path / "people.csv", "email,first_name\nana@example.com,Ana\n"
                 "one@example.com,One\ngone@example.com,\nBo@Example.com,Bo\ncy@example.com,\n")  # fmt: skip
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert "people.csv:4: gone@example.com is suppressed" in result.output
    assert "Imported 3 new, 1 already known, 1 bad rows." in result.output
    first = catalog_for(workspace / "sequences").triggered_by("signup")[0]
    with session_scope(settings) as session:
        subs = {s.email: s for s in session.scalars(select(Subscriber))}
        assert set(subs) == {"one@example.com", "ana@example.com", "bo@example.com",
                             "cy@example.com"}  # fmt: skip
        keys = {s.link_key for s in subs.values()}
        assert len(keys) == 4 and all(len(k) == 16 for k in keys)
        for email in ("ana@example.com", "bo@example.com", "cy@example.com"):
            sub = subs[email]
            assert (sub.status, sub.source, sub.score) == ("active", "import", 0)
            assert sub.confirmed_at == sub.created_at and sub.confirmation_sent_at is None
            consents = session.execute(select(Consent.action, Consent.at, Consent.source,
                                              Consent.form, Consent.wording, Consent.ip)
                                       .where(Consent.subscriber_id == sub.id)).all()  # fmt: skip
            assert sorted(consents) == [("confirmed", sub.created_at, "import", "people.csv",
                                         None, None),
                                        ("requested", sub.created_at, "import", "people.csv",
                                         None, None)]  # fmt: skip
            (e,) = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == sub.id))
            assert (e.sequence, e.round, e.status, e.next_step_id) == (
                first.name,
                1,
                "active",
                first.steps[0].id,
            )
            assert (
                e.next_due_at
                == sub.created_at + first.steps[0].after
                == e.enrolled_at + first.steps[0].after
            )
        assert (
            subs["ana@example.com"].first_name == "Ana"
            and subs["cy@example.com"].first_name is None
        )
        # the known one is left as it was: one enrolment, its own consents only
        one = subs["one@example.com"]
        assert one.first_name is None and one.source == "cli"
        assert session.scalar(select(func.count()).select_from(Enrollment)
                              .where(Enrollment.subscriber_id == one.id)) == 1  # fmt: skip


#: Addresses on both sides of the plain-address fast path: dot-atoms in every case,
#: international domains, and what only email_validator may judge (quoted local parts,
#: domain literals, bad dots, lengths at the limits, non-ASCII local parts).
SAMPLE = [
    "ana@example.com", " Ana.Lopez+news@Example.COM ", "o'brien@example.ie",
    "x!#$%&'*+/=?^_`{|}~-y@example.org", "a.b.c@sub.domain.example.co.uk", "1@2.io",
    "ana@exämple.com", "ANA@ÉXAMPLE.COM", "ana@xn--exmple-cua.com", "ana@例え.jp",
    '"ana lopez"@example.com', '"a@b"@example.com', "ana@[127.0.0.1]", "ana@localhost",
    ".ana@example.com", "ana.@example.com", "a..b@example.com", "ana@example..com",
    "ana@-example.com", "ana@example.com.", "ana@example", "ana@@example.com", "@example.com",
    "ana@", "", "  ", "ana", "josé@example.com", "ana@exa mple.com", "ana@exam_ple.com",
    "a" * 64 + "@example.com", "a" * 65 + "@example.com",
    "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".com", "a@" + "b" * 64 + ".com",
    "ana@example.c0m", "ana@123.123.123.123", "ana@example.invalid", "ana@example.test",
]  # fmt: skip


def test_the_plain_address_fast_path_agrees_with_email_validator():
    """normalize_email skips email_validator for a plain dot-atom local part (checking
    its domain once per domain): on every sample it says what the validator alone says."""
    from email_validator import EmailNotValidError, validate_email

    def reference(raw: str) -> str | None:
        try:
            r = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError:
            return None
        return str(r.ascii_email or r.normalized).lower()

    sample = SAMPLE + [f"{a}{i}@{d}" for i, (a, d) in enumerate(
        (a, d) for a in ("x", "X.Y", "x+y", "x_y-z") for d in ("a.co", "Ü.example", "b..c"))]  # fmt: skip
    for raw in sample:
        try:
            ours: str | None = normalize_email(raw)
        except SubscriberError:
            ours = None
        assert ours == reference(raw), raw


def test_an_address_named_again_in_a_later_batch_is_one_subscriber_with_both_rows(
    runner, env, settings, workspace, tmp_path, monkeypatch
):
    """Rows are checked while earlier batches are written: a repeat of an address from an
    earlier batch still merges into the one subscriber (tags of both, the later field)."""
    monkeypatch.setattr(importing, "BATCH", 2)
    (workspace / "sequences" / "gear.yaml").write_text(GEAR)
    (workspace / "nurture.toml").write_text((workspace / "nurture.toml").read_text() + FIELDS)
    path = write(tmp_path / "people.csv", "email,tags,company\n"
                 "ana@example.com,,Old Co\nbo@example.com,,\ncy@example.com,,\n"
                 "ANA@example.com,gear,New Co\ndi@example.com,,\nana@example.com,vip,\n")  # fmt: skip
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert "Imported 4 new, 2 already known, 0 bad rows." in result.output
    subs = subscribers(settings)
    assert set(subs) == {"ana@example.com", "bo@example.com", "cy@example.com", "di@example.com"}
    assert subs["ana@example.com"].attributes == {"company": "New Co"}
    with session_scope(settings) as session:
        tags = set(session.scalars(select(Tag.name).join(Subscriber)
                                   .where(Subscriber.email == "ana@example.com")))  # fmt: skip
    assert tags == {"gear", "vip"}
    assert ("ana@example.com", "gear") in enrolments(settings)


def test_a_file_broken_near_its_end_writes_nothing(runner, env, settings, tmp_path, monkeypatch):
    """Batches are written while later rows are checked, yet a file that cannot be read
    (here: not UTF-8 on its last row) is refused before the first batch is written."""
    monkeypatch.setattr(importing, "BATCH", 2)
    good = "".join(f"p{i}@example.com\n" for i in range(9))
    path = tmp_path / "people.csv"
    path.write_bytes(b"email\n" + good.encode() + b"caf\xe9@example.com\n")
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 1
    assert "is not UTF-8 text; save it as CSV UTF-8" in result.output
    assert subscribers(settings) == {}
