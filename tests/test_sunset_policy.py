"""The [sunset] table of nurture.toml: every mistake is one sentence at its line, from
the settings (every command) and from `validate`; a win-back sequence that cannot be
used stops the policy, never the sending."""

from __future__ import annotations

import pytest

from nurture.cli import cli
from tests.conftest import POSTAL, SENDER
from tests.helpers.sunset import invoke

HEAD = f'from = "{SENDER}"\npostal_address = "{POSTAL}"\n\n[sunset]\n'  # [sunset] on line 4


def write(workspace, body: str) -> None:
    (workspace / "nurture.toml").write_text(HEAD + body)


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        ('inactive_for = "120d"\nthen = "unsubscribe"\ninactive_fro = "90d"\n',
         ["nurture.toml:7: [sunset] unknown key 'inactive_fro' (did you mean 'inactive_for'?)"]),
        ('inactive_for = "120 dayz"\nthen = "unsubscribe"\n',
         ["nurture.toml:5: [sunset] inactive_for: bad duration '120 dayz': write a number and a "
          "unit, like 45m, 12h, 2d, 1w or '2 days'"]),
        ('inactive_for = "120m"\nthen = "unsubscribe"\n',
         ["nurture.toml:5: [sunset] inactive_for '120m' is shorter than 7 days: is the unit "
          'right (like "120d")?']),
        ('inactive_for = "120d"\nthen = "stop-broadcasts"\n',
         ["nurture.toml:6: [sunset] then = 'stop-broadcasts': use \"unsubscribe\" or "
          "\"stop_broadcasts\" (did you mean 'stop_broadcasts'?)"]),
        ('inactive_for = "120d"\n',
         ['nurture.toml:4: [sunset] needs then = "unsubscribe" or then = "stop_broadcasts"']),
        ('then = "unsubscribe"\ngrace = 7\nwinback = ""\n',
         ['nurture.toml:4: [sunset] needs inactive_for, like inactive_for = "120d"',
          "nurture.toml:6: [sunset] grace: bad duration 7: write a number and a unit, like 45m, "
          "12h, 2d, 1w or '2 days'",
          "nurture.toml:7: [sunset] winback = '': name a sequence, like winback = \"win-back\""]),
    ],
)  # fmt: skip
def test_each_mistake_in_the_policy_is_reported_at_its_line(runner, env, workspace, body, problems):
    write(workspace, body)
    for command in (["validate"], ["send-due"], ["subscribers", "list"]):
        result = runner.invoke(cli, command, env=env)
        assert result.exit_code == 1, result.output
        assert result.output == "Error: " + "\n".join(problems) + "\n"  # every one, in order


def test_a_policy_that_is_not_a_table_is_refused(runner, env, workspace):
    (workspace / "nurture.toml").write_text(f'from = "{SENDER}"\nsunset = "120d"\n')
    result = runner.invoke(cli, ["validate"], env=env)
    assert result.exit_code == 1
    assert result.output == ('Error: nurture.toml:2: [sunset] must be a table, like [sunset] with '
                             'inactive_for = "120d" and then = "unsubscribe"\n')  # fmt: skip


def test_a_winback_sequence_that_does_not_exist_is_named_with_a_suggestion(
    runner, env, workspace, sink, caplog
):
    write(workspace, 'inactive_for = "120d"\nwinback = "winback"\nthen = "unsubscribe"\n')
    problem = ("nurture.toml:6: [sunset] winback names sequence 'winback', which does not exist "
               "(did you mean 'win-back'?)")  # fmt: skip
    result = runner.invoke(cli, ["validate"], env=env)
    assert result.exit_code == 1
    assert problem in result.output

    result = runner.invoke(cli, ["sunset", "--dry-run"], env=env)
    assert result.exit_code == 1
    assert result.output == f"Error: {problem} (nobody was sunset; see `nurture validate`)\n"

    # send-due still sends what is due; only the policy waits, and says why
    invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    result = runner.invoke(cli, ["send-due"], env=env)
    assert result.exit_code == 0
    assert result.output == ("send-due: 1 due, 1 sent, sunset not applied: its win-back "
                             "sequence cannot be used (nurture validate)\n")  # fmt: skip
    assert f"{problem} (nobody was sunset" in caplog.text
    assert len(sink.to("ana@example.com")) == 1


def test_a_winback_sequence_that_starts_by_itself_is_an_error(runner, env, workspace):
    write(workspace, 'inactive_for = "120d"\nwinback = "win-back"\nthen = "unsubscribe"\n')
    path = workspace / "sequences" / "win-back.yaml"
    path.write_text(path.read_text().replace("trigger: manual", "trigger: signup"))
    result = runner.invoke(cli, ["validate"], env=env)
    assert result.exit_code == 1
    assert ("sequences/win-back.yaml:6: trigger: signup would send the win-back to people who "
            "are not inactive: the [sunset] policy starts it, so write trigger: manual"
            ) in result.output  # fmt: skip


def test_the_sunset_command_without_a_policy_says_how_to_write_one(runner, env):
    result = runner.invoke(cli, ["sunset", "--dry-run"], env=env)
    assert result.exit_code == 1
    assert result.output == ('Error: nurture.toml has no [sunset] policy: add one, like [sunset] '
                             'with inactive_for = "120d", winback = "win-back", then = '
                             '"unsubscribe"\n')  # fmt: skip


def test_a_valid_policy_passes_validate_and_is_shown(runner, env, workspace):
    write(workspace, 'inactive_for = "16w"\nwinback = "win-back"\nthen = "stop_broadcasts"\n'
          'grace = "3d"\n')  # fmt: skip
    assert invoke(runner, env, "validate").endswith("0 errors, 0 warnings\n")
    out = invoke(runner, env, "sunset", "--dry-run")
    assert out == ("policy: no open or click for 112d: send them 'win-back'; if still silent 3d "
                   "after its last email, stop their newsletters\n"
                   "dry run, nothing changed; nobody to move\n")  # fmt: skip


def test_a_grace_of_nothing_is_honoured_not_replaced_by_the_default(runner, env, workspace):
    write(workspace, 'inactive_for = "16w"\nwinback = "win-back"\nthen = "unsubscribe"\n'
          'grace = "0d"\n')  # fmt: skip
    out = invoke(runner, env, "sunset", "--dry-run")
    assert "if still silent 0m after its last email, unsubscribe them" in out  # not 7d
