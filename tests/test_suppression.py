"""The suppression list from the command line, and a sequence that reacts to a bounce."""

from __future__ import annotations

from sqlalchemy import select

from nurture.cli import cli
from nurture.delivery.bounces.handling import handle_message
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Enrollment, SuppressionRemoval
from tests.helpers.bounces import BOUNCE_ADDRESS, sample, send_welcome
from tests.helpers.sending import enqueue_welcome


def _run(runner, env, *args):
    return runner.invoke(cli, list(args), env=env)


def test_add_list_remove_and_the_log_of_who_removed_it(runner, env, settings, sink):
    [queued] = enqueue_welcome(settings, "ana@example.com")
    result = _run(runner, env, "suppression", "add", "ANA@example.com", "--reason", "by phone")
    assert (result.exit_code, result.output) == (0, "ANA@example.com is now suppressed.\n")
    with session_scope(settings) as session:
        assert session.get(Delivery, queued).status == "cancelled"  # queued email cancelled
    listed = _run(runner, env, "suppression", "list")
    assert "by phone" in listed.output and "1 suppressed address." in listed.output
    assert "ana@example.com" not in listed.output.lower()  # only the hash is kept
    _run(runner, env, "suppression", "add", "dan@example.com")
    refused = _run(runner, env, "subscribers", "add", "dan@example.com", "--confirmed")
    assert refused.exit_code == 1
    assert "Error: dan@example.com is suppressed (it bounced, complained" in refused.output
    no_reason = _run(runner, env, "suppression", "remove", "ana@example.com")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    removed = _run(runner, env, "suppression", "remove", "ana@example.com", "--reason",
                   "mailbox fixed", "--by", "maya")  # fmt: skip
    assert removed.exit_code == 0, removed.output
    assert removed.output == "ana@example.com removed from the suppression list (by maya).\n"
    with session_scope(settings) as session:
        [log] = session.scalars(select(SuppressionRemoval)).all()
        assert (log.by, log.why, log.reason) == ("maya", "mailbox fixed", "by phone")
    twice = _run(runner, env, "suppression", "remove", "ana@example.com", "--reason", "x")
    assert twice.exit_code == 1 and "is not on the suppression list" in twice.output


def test_import_from_a_provider_csv_and_export_round_trip(runner, env, settings, tmp_path):
    csv_file = tmp_path / "cleaned.csv"
    csv_file.write_text("Email Address,Reason\nana@example.com,hard\nBEN@example.com,spam\n"
                        "not-an-address,?\n")  # fmt: skip
    result = _run(runner, env, "suppression", "import", str(csv_file), "--reason", "Mailchimp")
    assert result.exit_code == 1
    assert "2 addresses newly suppressed." in result.output
    assert "not an address, skipped: not-an-address" in result.output
    lines = tmp_path / "plain.txt"
    lines.write_text("ben@example.com\ncara@example.com\n")
    assert "1 address newly suppressed." in _run(runner, env, "suppression", "import",
                                                  str(lines)).output  # fmt: skip
    exported = tmp_path / "out.csv"
    assert _run(runner, env, "suppression", "export", str(exported)).exit_code == 0
    assert exported.read_text().count("\n") == 4  # header and three hashes
    other = {**env, "NURTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    back = _run(runner, other, "suppression", "import", str(exported))
    assert "3 addresses newly suppressed." in back.output
    assert _run(runner, other, "subscribers", "add", "cara@example.com").exit_code == 1


def test_exit_when_bounced_ends_the_sequence_on_a_soft_bounce(env, sink, workspace):
    seq = workspace / "sequences" / "from-curious-to-customer.yaml"
    seq.write_text(seq.read_text().replace("exit_when: {event: demo_booked}",
                                           "exit_when: {event: [demo_booked, bounced]}"))  # fmt: skip
    benv = {**env, "NURTURE_BOUNCE_ADDRESS": BOUNCE_ADDRESS}
    settings = load_settings(benv["NURTURE_WORKSPACE"], env=benv)
    sent = send_welcome(settings, sink, "ana@example.com")
    handled = handle_message(settings, sample("yahoo-soft.eml", sent))
    assert (handled.outcome, handled.suppressed) == ("soft bounce", False)
    with session_scope(settings) as session:
        [enrolment] = session.scalars(select(Enrollment)).all()
        assert enrolment.status == "exited" and enrolment.end_reason
