"""`siyu check` on playbooks that load but probably do not do what their author meant.

A fractional holdout and an offer tier that can never win are errors of the grammar; a coupon
whose discount reaches its threshold, an SMS playbook scheduled outside the SMS send window and
a cron with minute and hour swapped are warnings, located at file:line:col, that `--strict`
turns into errors. The CLI is run in process (no database: `check` stays offline).
"""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from engine import examples
from engine.cli import main
from engine.errors import PlaybookError, Problem
from engine.grammar.lint import lint_playbooks
from engine.grammar.loader import load_playbooks, load_text

PLAYBOOK = """\
id: pet-milk-refill
name: 宠物奶粉复购提醒
trigger:
  schedule: "0 10 * * *"
audience:
  all:
    - tag: vip
offer:
  by: avg_order_value
  tiers:
    - {min: 200, coupon: {threshold: 250, discount: 50}}
    - {min: 100, coupon: {threshold: 150, discount: 20}}
channels:
  - wecom: {text: "{{ member.nickname }}，您好"}
  - sms: {template_code: SMS_1, params: {name: "{{ member.nickname }}"}}
holdout: 10
"""
SINGLE_COUPON = PLAYBOOK.replace("""  by: avg_order_value
  tiers:
    - {min: 200, coupon: {threshold: 250, discount: 50}}
    - {min: 100, coupon: {threshold: 150, discount: 20}}
""", "  coupon: {threshold: 200, discount: 40}\n")
SMS_WINDOW = (time(8), time(22))


def edited(old: str, new: str, text: str = PLAYBOOK) -> str:
    assert old in text
    return text.replace(old, new)


def load_problems(text: str) -> list[Problem]:
    with pytest.raises(PlaybookError) as caught:
        load_text(text, "p.yaml")
    return caught.value.problems


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def lint(tmp_path: Path, text: str, windows: dict[str, tuple[time, time]] | None = None) -> list[Problem]:
    loaded = load_playbooks([write(tmp_path, text)])
    return lint_playbooks(loaded, timezone="Asia/Shanghai", send_windows={"sms": SMS_WINDOW} if windows is None
                          else windows)


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- errors of the grammar


@pytest.mark.parametrize("holdout", ["0.1", "10.5", "'0.5'", "99.99"])
def test_holdout__a_fraction_is_an_error_at_its_line(holdout: str) -> None:
    """`holdout` is a whole-number percentage: 0.1 (it held out 1 %) and 10.5 (11 %) are located errors."""
    (problem,) = load_problems(edited("holdout: 10", f"holdout: {holdout}"))
    assert (problem.line, problem.column) == (16, 10)
    assert problem.severity == "error"
    assert "holdout is a percentage, a whole number 0–100" in problem.message
    assert f"{holdout.strip(chr(39))} is not a whole number" in problem.message


@pytest.mark.parametrize(("holdout", "value"), [("0", 0), ("10", 10), ("100", 100), ("10.0", 10)])
def test_holdout__a_whole_number_loads_as_an_int(holdout: str, value: int) -> None:
    """Whole numbers 0–100 load as they did (10.0 is the whole number 10), as ints for the 0–99 draw."""
    playbook, _ = load_text(edited("holdout: 10", f"holdout: {holdout}"), "p.yaml")
    assert playbook.holdout == value and isinstance(playbook.holdout, int)


def test_holdout__out_of_range_is_still_an_error() -> None:
    """101 % is refused as before."""
    (problem,) = load_problems(edited("holdout: 10", "holdout: 101"))
    assert problem.line == 16 and "less than or equal to 100" in problem.message


@pytest.mark.parametrize("mins", [(100, 200), (200, 200)])
def test_tiers__a_tier_that_can_never_win_is_an_error_at_that_tier(mins: tuple[int, int]) -> None:
    """Tiers are tried top to bottom: a tier below one with a lower or equal min can never win."""
    text = edited("{min: 100,", "{min: SECOND,").replace("{min: 200,", f"{{min: {mins[0]},")
    text = text.replace("{min: SECOND,", f"{{min: {mins[1]},")
    (problem,) = load_problems(text)
    assert (problem.line, problem.column) == (12, 8)
    assert problem.message.startswith(f"tier 2 (min {mins[1]}) can never win: tier 1 (min {mins[0]}) comes first")


def test_tiers__an_unreachable_third_tier_names_the_tier_that_takes_its_members() -> None:
    """With 300, 100, 200 the third tier loses every member to the second."""
    text = edited("    - {min: 100, coupon: {threshold: 150, discount: 20}}\n",
                  "    - {min: 100, coupon: {threshold: 150, discount: 20}}\n"
                  "    - {min: 150, coupon: {threshold: 180, discount: 30}}\n")
    (problem,) = load_problems(text)
    assert problem.line == 13 and problem.message.startswith("tier 3 (min 150) can never win: tier 2 (min 100)")


# --------------------------------------------------------------------------- warnings


def test_lint__a_good_playbook_has_no_warning(tmp_path: Path) -> None:
    """A daily 10:00 SMS playbook with sensible coupons gives nothing to warn about."""
    assert lint(tmp_path, PLAYBOOK) == []


def discount_at(text: str, line: int) -> tuple[int, int]:
    """Where the value of `discount:` sits on a line (1-based line and column)."""
    return line, text.splitlines()[line - 1].index("discount: ") + len("discount: ") + 1


@pytest.mark.parametrize("coupon", ["{threshold: 40, discount: 40}", "{threshold: 30, discount: 40}"])
def test_lint__discount_at_or_above_threshold_is_a_warning(tmp_path: Path, coupon: str) -> None:
    """A coupon that takes off all of its threshold (or more) is probably threshold and discount swapped."""
    text = edited("{threshold: 200, discount: 40}", coupon, SINGLE_COUPON)
    (problem,) = lint(tmp_path, text)
    assert problem.severity == "warning"
    assert (problem.line, problem.column) == discount_at(text, 9)
    assert "is not less than its threshold" in problem.message and "did you swap" in problem.message


def test_lint__discount_warning_points_at_the_tier(tmp_path: Path) -> None:
    """In a tiered offer the warning sits on that tier's discount."""
    text = edited("{threshold: 150, discount: 20}", "{threshold: 150, discount: 150}")
    (problem,) = lint(tmp_path, text)
    assert (problem.line, problem.column, problem.severity) == (*discount_at(text, 12), "warning")
    assert problem.message.startswith("coupon discount 150 is not less than its threshold 150")


def test_lint__a_no_threshold_coupon_is_not_warned(tmp_path: Path) -> None:
    """threshold 0 is a no-threshold coupon (无门槛券): any discount is what was meant."""
    assert lint(tmp_path, edited("{threshold: 200, discount: 40}", "{threshold: 0, discount: 10}",
                                 SINGLE_COUPON)) == []


def test_lint__sms_scheduled_at_2230_waits_for_the_send_window(tmp_path: Path) -> None:
    """An SMS playbook at 22:30 is outside 08:00–22:00: its SMS touches wait until 08:00."""
    (problem,) = lint(tmp_path, edited('"0 10 * * *"', '"30 22 * * *"'))
    assert (problem.line, problem.column, problem.severity) == (4, 13, "warning")
    assert problem.message == ("runs at 22:30, outside the sms send_window 08:00–22:00 (Asia/Shanghai): its sms "
                               "touches will wait (deferred) until the window opens at 08:00")


def test_lint__send_window_edges(tmp_path: Path) -> None:
    """The window is [start, end): 08:00 and 21:59 are inside, 22:00 and 07:59 outside."""
    assert lint(tmp_path, edited('"0 10 * * *"', '"0 8 * * *"')) == []
    assert lint(tmp_path, edited('"0 10 * * *"', '"59 21 * * *"')) == []
    (problem,) = lint(tmp_path, edited('"0 10 * * *"', '"0 7,22 * * *"'))
    assert problem.message.startswith("runs at 07:00, 22:00, outside")


def test_lint__send_window_reads_the_playbook_time_in_the_config_zone(tmp_path: Path) -> None:
    """10:00 in Los Angeles is after 22:00 in Shanghai (the config's zone, where the window is read)."""
    text = edited('  schedule: "0 10 * * *"', '  schedule: "0 10 * * *"\ntimezone: America/Los_Angeles')
    (problem,) = lint(tmp_path, text)
    assert "outside the sms send_window" in problem.message


def test_lint__no_window_no_warning(tmp_path: Path) -> None:
    """Without an SMS send window (an adapter without one), the time is not questioned; nor for wecom."""
    assert lint(tmp_path, edited('"0 10 * * *"', '"30 22 * * *"'), windows={}) == []
    wecom_only = edited('  - sms: {template_code: SMS_1, params: {name: "{{ member.nickname }}"}}\n', "",
                        edited('"0 10 * * *"', '"30 22 * * *"'))
    assert lint(tmp_path, wecom_only) == []


def test_lint__event_triggered_sms_is_not_questioned(tmp_path: Path) -> None:
    """Events come at any hour: only scheduled playbooks are checked against the window."""
    text = edited('trigger:\n  schedule: "0 10 * * *"', "trigger: {event: order_created, delay: 30m}")
    assert lint(tmp_path, text) == []


def test_lint__minute_and_hour_swapped_is_a_warning_saying_when_it_runs(tmp_path: Path) -> None:
    """`10 0 * * *` runs daily at 00:10; the warning says so and offers `0 10 * * *`."""
    found = lint(tmp_path, edited('"0 10 * * *"', '"10 0 * * *"'), windows={})
    (problem,) = found
    assert (problem.line, problem.column, problem.severity) == (4, 13, "warning")
    assert problem.message == ("runs daily at 00:10 (Asia/Shanghai); did you mean 0 10 * * * (10:00)? "
                               "cron fields are minute, then hour")


@pytest.mark.parametrize("cron", ["0 10 * * *", "30 5 * * *", "5 0 * * *", "0 0 * * *", "10 0,12 * * *",
                                  "10,40 0 * * *", "30 10 * * 1-5"])
def test_lint__a_cron_that_does_not_look_swapped_is_not_warned(tmp_path: Path, cron: str) -> None:
    """Only one hour 00–05 with one minute that reads as a daytime hour (06–23) looks swapped."""
    assert lint(tmp_path, edited('"0 10 * * *"', f'"{cron}"'), windows={}) == []


def test_lint__swapped_cron_on_some_days_says_at_not_daily(tmp_path: Path) -> None:
    """With days restricted the warning does not claim "daily"."""
    (problem,) = lint(tmp_path, edited('"0 10 * * *"', '"20 1 * * 5"'), windows={})
    assert problem.message.startswith("runs at 01:20 (Asia/Shanghai); did you mean 1 20 * * 5 (20:01)?")


@pytest.mark.parametrize("template", ["{{ member.phone }}", '{{ member["phone"] }}', "{{ member.phone[-4:] }}"])
def test_lint__a_message_that_sends_member_phone_is_a_warning_at_the_template(tmp_path: Path, template: str) -> None:
    """A template that puts the member's phone number in the message is warned, at that template's line."""
    found = lint(tmp_path, edited('params: {name: "{{ member.nickname }}"}', f"params: {{phone: '{template}'}}"))
    (problem,) = found
    assert (problem.line, problem.column, problem.severity) == (15, 49, "warning")
    assert problem.message.startswith("this message sends the member's phone number (`member.phone`)")


def test_lint__other_member_fields_in_a_message_are_not_warned(tmp_path: Path) -> None:
    """Only `member.phone` in a template is warned: the member's city and nickname are not."""
    assert lint(tmp_path, edited("{{ member.nickname }}，您好", "{{ member.city }}的{{ member.nickname }}")) == []


def test_lint__bundled_examples_give_no_warning() -> None:
    """The example playbooks shipped with Siyu are clean, with the SMS adapter's default window."""
    loaded = load_playbooks([examples.playbooks()])
    assert lint_playbooks(loaded, timezone="Asia/Shanghai", send_windows={"sms": SMS_WINDOW}) == []


# --------------------------------------------------------------------------- siyu check


def test_check__prints_warnings_located_and_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings go to stderr as `file:line:col: warning: …`; check still exits 0 and counts them."""
    path = write(tmp_path, edited('"0 10 * * *"', '"30 22 * * *"'))
    code, out, err = check(tmp_path, capsys, str(path))
    assert code == 0
    assert out == f"ok: 1 playbook(s) valid in {path}; 1 warning\n"
    assert err.startswith(f"{path}:4:13: warning: runs at 22:30, outside the sms send_window 08:00–22:00")


def test_check__strict_makes_a_warning_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--strict`: the same warning, exit 1, and no ok line."""
    path = write(tmp_path, edited('"0 10 * * *"', '"10 0 * * *"'))
    code, out, err = check(tmp_path, capsys, "--strict", str(path))
    assert (code, out) == (1, "")
    assert f"{path}:4:13: warning: runs daily at 00:10" in err
    assert err.splitlines()[-1] == f"siyu check: 0 errors, 2 warnings in {path}; --strict: warnings count as errors"


def test_check__holdout_fraction_exits_1_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`holdout: 0.1` fails check at its line."""
    path = write(tmp_path, edited("holdout: 10", "holdout: 0.1"))
    code, out, err = check(tmp_path, capsys, str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:16:10: holdout is a percentage")


def test_check__the_sms_window_comes_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With a config, its SMS channel's send_window decides (here until 23:00: 22:30 is fine)."""
    path = write(tmp_path, edited('"0 10 * * *"', '"30 22 * * *"'))
    config = tmp_path / "siyu.yaml"
    monkeypatch.setenv("SIYU_TEST_SMS_SECRET", "s")
    config.write_text("channels:\n  sms: {adapter: aliyun_sms, access_key_id: k, access_key_secret: '${SIYU_TEST_SMS_SECRET}', "
                      "sign_name: 思语, send_window: ['08:00', '23:00']}\n", encoding="utf-8")
    code, out, err = check(tmp_path, capsys, "--config", str(config), str(path))
    assert (code, err) == (0, ""), err
    assert out.endswith("; 0 warnings\n")


def test_check__bundled_examples_ok_with_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`siyu check` where there are no playbooks checks the bundled examples: valid, no warnings."""
    monkeypatch.chdir(tmp_path)
    code, out, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")
    assert out.startswith("ok: 7 playbook(s) valid in the bundled examples") and out.endswith("; 0 warnings\n")
