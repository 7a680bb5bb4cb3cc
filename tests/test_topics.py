"""Topics declared in nurture.toml: `validate` names each mistake at its line with a
hint, a workspace without topics works as before, and broadcasts and segments refuse
a topic nobody declared."""

from __future__ import annotations

from pathlib import Path

from nurture.cli import cli
from nurture.content.topics import key_lines
from nurture.store.engine import session_scope
from nurture.store.tables import LeftTopic
from tests.helpers.broadcast import add_people
from tests.helpers.topics import TOPICS_TOML, issue, with_topics


def validate(runner, workspace: Path):
    return runner.invoke(cli, ["--workspace", str(workspace), "validate"],
                         env={"NURTURE_DATABASE_URL": "sqlite://"})  # fmt: skip


def test_a_workspace_with_topics_is_valid(runner, workspace):
    result = validate(runner, with_topics(workspace))
    assert result.exit_code == 0, result.output


def test_bad_topic_names_and_labels_are_errors_at_their_line(runner, workspace):
    with_topics(workspace)
    (workspace / "nurture.toml").write_text(
        TOPICS_TOML.replace(
            "[topics]\n",
            '[topics]\n"Baking Tips" = "Tips"\nempty = "  "\nnumber = 3\n'
            f'long = "{"x" * 101}"\ntimezone = "UTC"\n',
        ).replace('signup_topics = ["newsletter", "tips"]', 'signup_topics = ["newsleter"]')
    )
    result = validate(runner, workspace)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("nurture.toml")]
    assert errors == [
        "nurture.toml:3: signup_topics: unknown topic 'newsleter' (did you mean 'newsletter'?)",
        "nurture.toml:6: [topics] 'Baking Tips' is not a topic name: use lower-case letters, "
        "digits, '-' and '_', starting with a letter (did you mean 'baking-tips'?)",
        "nurture.toml:7: [topics] empty: the label is empty: write what readers see on the "
        "preference centre",
        "nurture.toml:8: [topics] number: the label must be text in quotes, like "
        'number = "Baking tips"',
        "nurture.toml:9: [topics] long: the label is longer than 100 characters",
        "nurture.toml:10: [topics] timezone is a setting, not a topic: settings go before the "
        "first [table] of nurture.toml",
    ]


def test_unknown_topics_of_sequences_and_issues_are_errors_with_a_hint(runner, workspace):
    with_topics(workspace)
    tips = workspace / "sequences" / "tips.yaml"
    tips.write_text(tips.read_text().replace("topic: tips", "topic: tipz"))
    (workspace / "sequences" / "extra.yaml").write_text(
        "name: extra\nsteps:\n  - id: one\n    subject: One\n    template: tips/note\n"
    )
    (workspace / "newsletters").mkdir(exist_ok=True)
    (workspace / "newsletters" / "december.md").write_text(
        "---\nsubject: December\npreheader: Hi\ntopic: newsleter\n---\nNews.\n"
    )
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert "sequences/tips.yaml:3: topic: unknown topic 'tipz' (did you mean 'tips'?)" in (
        result.output
    )
    assert ("newsletters/december.md:4: topic: unknown topic 'newsleter' (did you mean "
            "'newsletter'?)") in result.output  # fmt: skip
    assert ("sequences/extra.yaml:1: sequence 'extra' belongs to the topic of its own name, "
            "which [topics] does not declare: add `topic:` naming one of newsletter, tips, or "
            "declare extra in [topics]") in result.output  # fmt: skip


def test_without_topics_a_sequence_topic_is_an_error_and_the_rest_unchanged(runner, workspace):
    seq = workspace / "sequences" / "from-curious-to-customer.yaml"
    seq.write_text(seq.read_text().replace("trigger: signup\n", "trigger: signup\ntopic: tips\n"))
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert ("sequences/from-curious-to-customer.yaml:7: topic: topic 'tips', but nurture.toml "
            'declares no topics (add a [topics] table, e.g. tips = "Label readers see")'
            ) in result.output  # fmt: skip


def test_the_form_snippet_offers_the_signup_topics(runner, workspace):
    with_topics(workspace)
    result = runner.invoke(cli, ["--workspace", str(workspace), "form-snippet"],
                           env={"NURTURE_DATABASE_URL": "sqlite://"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert 'name="topics" value="tips"' in result.output and "Baking tips" in result.output


def test_key_lines_reads_tables_quoted_and_dotted_keys():
    lines = key_lines('a = 1\n[topics]\n"x y" = "X"\ntips = "T"\n[other]\ntopics.z = 1\n')
    assert lines[("a",)] == 1 and lines[("topics",)] == 2
    assert lines[("topics", "x y")] == 3 and lines[("topics", "tips")] == 4
    assert lines[("other", "topics", "z")] == 6


def test_broadcast_refuses_an_unknown_topic(runner, env, workspace, tmp_path):
    with_topics(workspace)
    bad = runner.invoke(cli, ["broadcast", "send", str(issue(tmp_path, "Hello")), "--topic",
                              "tipz", "--dry-run"], env=env)  # fmt: skip
    assert bad.exit_code == 1
    assert "--topic: unknown topic 'tipz' (did you mean 'tips'?)" in bad.output
    front = issue(tmp_path, "Front", topic="tipz")
    bad = runner.invoke(cli, ["broadcast", "send", str(front), "--dry-run"], env=env)
    assert bad.exit_code == 1
    assert "front.md:3: topic: unknown topic 'tipz' (did you mean 'tips'?)" in bad.output


def test_a_workspace_whose_topics_lack_the_newsletter_names_the_topic_of_each_issue(
    runner, env, workspace, tmp_path
):
    with_topics(workspace)
    toml = workspace / "nurture.toml"
    toml.write_text(toml.read_text().replace('newsletter = "The monthly newsletter"\n', "")
                    .replace('"newsletter", ', ""))  # fmt: skip
    bad = runner.invoke(cli, ["broadcast", "send", str(issue(tmp_path, "Hi")), "--dry-run"],
                        env=env)  # fmt: skip
    assert bad.exit_code == 1
    assert ("the issue names no topic, and [topics] does not declare the default one, "
            "newsletter: give --topic or topic: in the front matter (declared: tips)"
            ) in bad.output  # fmt: skip
    good = runner.invoke(cli, ["broadcast", "send", str(issue(tmp_path, "Hi", topic="tips")),
                               "--dry-run"], env=env)  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "Topic:    tips" in good.output


def test_segment_topic_term_counts_who_did_not_leave(runner, env, settings, workspace, tmp_path):
    with_topics(workspace)
    ids = add_people(settings, [{"email": f"p{i}@example.com"} for i in range(3)])
    with session_scope(settings) as session:
        session.add(LeftTopic(subscriber_id=ids["p0@example.com"], topic="tips"))
    source = str(issue(tmp_path, "Hello"))
    counted = runner.invoke(cli, ["broadcast", "send", source, "--segment", "topic:tips",
                                  "--dry-run"], env=env)  # fmt: skip
    assert counted.exit_code == 0, counted.output
    assert "Audience: 2 subscribers" in counted.output
    wrong = runner.invoke(cli, ["broadcast", "send", source, "--segment", "topic:tipz",
                                "--dry-run"], env=env)  # fmt: skip
    assert wrong.exit_code == 1
    assert "unknown topic 'tipz' at position 1 (did you mean 'tips'?)" in wrong.output
