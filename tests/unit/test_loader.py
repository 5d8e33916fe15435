"""`siyu check` semantics: every playbook problem is reported at file:line:col with a useful message.

Each test feeds the loader one broken playbook and asserts where the problem is reported
and what the message says; the positive tests load the issue's grammar example verbatim,
the public acceptance playbooks and the shipped examples.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import PlaybookError, Problem
from engine.grammar.loader import load_file, load_playbooks, load_text
from engine.grammar.playbook import Playbook

ROOT = Path(__file__).resolve().parents[2]
ACCEPTANCE_PLAYBOOKS = ROOT.parent / "shared" / "acceptance" / "playbooks"
SHIPPED_PLAYBOOKS = ROOT / "playbooks"

# The grammar example of issue 3, verbatim (comments included).
GRAMMAR_EXAMPLE = """\
id: pet-milk-refill                 # required, unique across files, ^[a-z0-9][a-z0-9-]*$
name: 宠物奶粉第21天复购提醒          # required, free text (Chinese is normal)
enabled: true                       # default true
timezone: Asia/Shanghai             # default: config `timezone`, itself default Asia/Shanghai
priority: 50                        # default 50; higher wins when policies must choose (later issue)
trigger:                            # exactly one of the two forms
  schedule: "0 10 * * *"            # 5-field cron, in the playbook timezone
  # event: order_created            # or: evaluated once per event of this type ...
  # delay: 30m                      # ... this long after it happened (s, m, h, d)
audience:                           # a condition tree: all / any / none, nestable, leaves below
  all:
    - last_purchase: {category: pet_milk, days_ago: 21}
    - reachable: [wecom, sms]
  none:
    - tag: do_not_disturb
offer:                              # optional
  by: avg_order_value               # a member metric: avg_order_value, total_spend, order_count
  tiers:                            # first tier (top to bottom) whose min <= metric wins
    - {min: 200, coupon: {threshold: 250, discount: 50, valid_days: 7}}
    - {min: 100, coupon: {threshold: 150, discount: 20, valid_days: 7}}
  # a member below every tier is NOT touched (reason no_offer)
  # single-offer form instead of by/tiers:  coupon: {threshold: 250, discount: 50, valid_days: 7}
channels:                           # preference order: the first channel the member is reachable on wins
  - wecom:
      text: "{{ member.nickname }}，毛孩子的奶粉快喝完了吧～送您满{{ offer.coupon.threshold }}减{{ offer.coupon.discount }}券"
  - sms:
      template_code: SMS_4820931
      params: {name: "{{ member.nickname }}", discount: "{{ offer.coupon.discount }}"}
  # - template: {template_id: "...", url: "...", data: {first: "...", keyword1: "..."}}
  # - ai_call: {scenario: lapsed_recall, variables: {name: "{{ member.nickname }}"}}
limits:
  cooldown_days: 28                 # never touch a member from this playbook twice within N days
  max_per_run: 5000                 # optional cap on sends per evaluation
holdout: 10                         # percent kept as a control group, per member (see "decisions" below)
"""

# A valid playbook; the tests below edit single lines of it (line numbers in the comments).
BASE_LINES = [
    "id: refill",                                                                   # 1
    "name: 复购提醒",                                                                # 2
    "trigger:",                                                                     # 3
    '  schedule: "0 10 * * *"',                                                     # 4
    "audience:",                                                                    # 5
    "  all:",                                                                       # 6
    "    - last_purchase: {category: pet_milk, days_ago: 21}",                      # 7
    "    - reachable: [wecom, sms]",                                                # 8
    "  none:",                                                                      # 9
    "    - tag: do_not_disturb",                                                    # 10
    "offer:",                                                                       # 11
    "  coupon: {threshold: 250, discount: 50, valid_days: 7}",                      # 12
    "channels:",                                                                    # 13
    "  - wecom:",                                                                   # 14
    '      text: "{{ member.nickname }}，满{{ offer.coupon.threshold }}减{{ offer.coupon.discount }}"',  # 15
    "  - sms:",                                                                     # 16
    "      template_code: SMS_1",                                                   # 17
    '      params: {name: "{{ member.nickname }}"}',                                # 18
    "limits:",                                                                      # 19
    "  cooldown_days: 28",                                                          # 20
    "holdout: 10",                                                                  # 21
]
BASE = "\n".join(BASE_LINES) + "\n"
FILE = "playbooks/refill.yaml"


def edit(replacements: dict[int, str | None] | None = None, append: str = "") -> str:
    """BASE with lines replaced (1-based; None deletes the line, text may hold several lines)."""
    lines = list(BASE_LINES)
    for number, text in sorted((replacements or {}).items(), reverse=True):
        if text is None:
            del lines[number - 1]
        else:
            lines[number - 1] = text
    return "\n".join(lines) + "\n" + append


def problems(text: str, file: str = FILE) -> list[Problem]:
    with pytest.raises(PlaybookError) as info:
        load_text(text, file)
    assert info.value.problems, "a PlaybookError always carries at least one problem"
    return info.value.problems


def only(text: str, file: str = FILE) -> Problem:
    found = problems(text, file)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def at(problem: Problem) -> tuple[str, int | None, int | None]:
    return problem.file, problem.line, problem.column


def test_base__loads() -> None:
    """The playbook the other tests edit is itself valid."""
    playbook, _ = load_text(BASE, FILE)
    assert playbook.id == "refill"
    assert [step.channel for step in playbook.channels] == ["wecom", "sms"]


# --------------------------------------------------------------------------- unknown keys


def test_unknown_key__top_level_did_you_mean() -> None:
    """A misspelt top-level key is reported at the key, with the closest real key."""
    problem = only(edit(append="holdot: 5\n"))
    assert at(problem) == (FILE, 22, 1)
    assert "unknown key 'holdot'" in problem.message
    assert "did you mean 'holdout'?" in problem.message


def test_unknown_key__inside_trigger_did_you_mean() -> None:
    """A misspelt trigger key points at the key inside `trigger`."""
    problem = only(edit({4: '  schedul: "0 10 * * *"'}))
    assert at(problem) == (FILE, 4, 3)
    assert "unknown key 'schedul'" in problem.message
    assert "did you mean 'schedule'?" in problem.message


def test_unknown_key__inside_a_leaf_did_you_mean() -> None:
    """A misspelt filter inside a leaf's flow mapping points at that key's column."""
    problem = only(edit({7: "    - last_purchase: {categroy: pet_milk, days_ago: 21}"}))
    assert at(problem) == (FILE, 7, 23)
    assert "unknown key 'categroy'" in problem.message
    assert "did you mean 'category'?" in problem.message


def test_unknown_key__member_field_did_you_mean() -> None:
    """`member: {citi: ...}` suggests `city`."""
    problem = only(edit({10: "    - member: {citi: 上海}"}))
    assert at(problem) == (FILE, 10, 16)
    assert "unknown key 'citi'" in problem.message
    assert "did you mean 'city'?" in problem.message


def test_unknown_key__inside_offer_coupon() -> None:
    """A misspelt coupon field inside the offer is located in the flow mapping."""
    problem = only(edit({12: "  coupon: {threshold: 250, discont: 50}"}))
    assert at(problem) == (FILE, 12, 28)
    assert "did you mean 'discount'?" in problem.message


def test_unknown_key__inside_channel_message() -> None:
    """A misspelt sms key (`templat_code`) is reported at the key."""
    problem = only(edit({17: "      templat_code: SMS_1"}))
    assert at(problem) == (FILE, 17, 7)
    assert "did you mean 'template_code'?" in problem.message


# --------------------------------------------------------------------------- leaves


def test_unknown_leaf__did_you_mean() -> None:
    """`tags:` is not a leaf; the message suggests `tag` and lists the leaves."""
    problem = only(edit({10: "    - tags: do_not_disturb"}))
    assert at(problem) == (FILE, 10, 7)
    assert "unknown condition 'tags'" in problem.message
    assert "did you mean 'tag'?" in problem.message
    assert "last_purchase" in problem.message and "coupon_expiring" in problem.message


def test_unknown_leaf__nested_group() -> None:
    """An unknown leaf inside a nested group is located at its own line."""
    problem = only(edit({10: "    - any:\n        - last_purchse: {category: x, days_ago: 1}"}))
    assert at(problem) == (FILE, 11, 11)
    assert "did you mean 'last_purchase'?" in problem.message


def test_leaf__two_conditions_in_one_item() -> None:
    """Two leaves in one list item are one problem that says to split them."""
    problem = only(edit({10: "    - {tag: a, member: {city: x}}"}))
    assert problem.line == 10
    assert "one condition per list item" in problem.message


# --------------------------------------------------------------------------- cron and delay


@pytest.mark.parametrize(("schedule", "substance"), [
    ("0 10 * *", ["want 5 fields", "got 4"]),
    ("0 10 * * * *", ["want 5 fields", "got 6"]),
    ("0 24 * * *", ["hour", "24", "0-23"]),
    ("60 10 * * *", ["minute", "60", "0-59"]),
    ("0 10 0 * *", ["day of month", "0", "1-31"]),
    ("0 10 * 13 *", ["month", "13", "1-12"]),
    ("0 10 * * 8", ["day of week", "8", "0-7"]),
    ("*/0 10 * * *", ["minute", "bad step"]),
    ("0 10/x * * *", ["hour", "bad step"]),
    ("0 10 * * fri-mon", ["day of week", "backwards"]),
    ("0 ten * * *", ["hour", "not a number"]),
])
def test_bad_cron__located_at_the_schedule_with_the_field(schedule: str, substance: list[str]) -> None:
    """A bad cron is reported at the schedule's value and names what is wrong."""
    problem = only(edit({4: f'  schedule: "{schedule}"'}))
    assert at(problem) == (FILE, 4, 13)
    assert problem.message.startswith("bad cron")
    for part in substance:
        assert part in problem.message


def test_bad_cron__number_instead_of_text() -> None:
    """`schedule: 5` (a YAML number) says to quote it."""
    problem = only(edit({4: "  schedule: 5"}))
    assert at(problem) == (FILE, 4, 13)
    assert "quote it" in problem.message


def test_bad_delay__located_at_the_delay() -> None:
    """`delay: 30 minutes` is not a duration; the message shows the accepted form."""
    problem = only(edit({4: "  event: order_created\n  delay: 30 minutes"}, append="").replace(
        "{{ offer", "{{ offer"))
    assert at(problem) == (FILE, 5, 10)
    assert "bad duration" in problem.message and "30m" in problem.message


def test_trigger__both_forms() -> None:
    """`schedule` and `event` together are refused at the trigger."""
    problem = only(edit({4: '  schedule: "0 10 * * *"\n  event: order_created'}))
    assert problem.line == 4
    assert "exactly one of" in problem.message


def test_trigger__delay_with_schedule() -> None:
    """`delay` belongs to event triggers."""
    problem = only(edit({4: '  schedule: "0 10 * * *"\n  delay: 30m'}))
    assert problem.line == 4
    assert "`delay` goes with `event`" in problem.message


# --------------------------------------------------------------------------- windows


def test_bad_window__two_windows() -> None:
    """Two windows in one leaf are refused at that leaf."""
    problem = only(edit({7: "    - last_purchase: {category: pet_milk, days_ago: 21, within_days: 3}"}))
    assert at(problem) == (FILE, 7, 22)
    assert "give one window, not days_ago and within_days" in problem.message


def test_bad_window__between_days_backwards() -> None:
    """`between_days: [5, 2]` says the first number must not exceed the second."""
    problem = only(edit({10: "    - purchased: {between_days: [5, 2]}"}))
    assert at(problem) == (FILE, 10, 18)
    assert "between_days [5, 2]" in problem.message
    assert "must not exceed" in problem.message


def test_bad_window__negative_days() -> None:
    """`days_ago: -1` is refused at the number."""
    problem = only(edit({10: "    - purchased: {days_ago: -1}"}))
    assert at(problem) == (FILE, 10, 29)
    assert "greater than or equal to 0" in problem.message


def test_bad_window__last_purchase_needs_one() -> None:
    """`last_purchase` without a window cannot fire once per cycle: it needs one."""
    problem = only(edit({7: "    - last_purchase: {category: pet_milk}"}))
    assert at(problem) == (FILE, 7, 22)
    assert "needs a window" in problem.message


def test_bad_window__between_days_wrong_length() -> None:
    """`between_days: [5]` is an error, never a crash."""
    problem = problems(edit({10: "    - purchased: {between_days: [5]}"}))[0]
    assert problem.line == 10


# --------------------------------------------------------------------------- channels


def test_unknown_channel__in_channels() -> None:
    """An unknown channel name lists the four channels."""
    problem = only(edit({16: "  - wechat:"}))
    assert at(problem) == (FILE, 16, 5)
    assert "'wechat'" in problem.message
    for name in ("sms", "ai_call", "wecom", "template"):
        assert name in problem.message


def test_unknown_channel__did_you_mean() -> None:
    """`wecomm` suggests `wecom`."""
    problem = only(edit({14: "  - wecomm:"}))
    assert at(problem) == (FILE, 14, 5)
    assert "did you mean 'wecom'?" in problem.message


def test_unknown_channel__in_reachable() -> None:
    """`reachable: [wecom, email]` is one problem, at `email` (not also one claiming the list is no channel)."""
    found = problems(edit({8: "    - reachable: [wecom, email]"}))
    assert [str(p) for p in found] == [
        f"{FILE}:8:26: 'email' is not one of: sms, ai_call, wecom, template"]


def test_unknown_channel__in_reachable_single() -> None:
    """`reachable: email` is refused at the value."""
    problem = only(edit({8: "    - reachable: email"}))
    assert at(problem) == (FILE, 8, 18)
    assert "'email' is not one of: sms, ai_call, wecom, template" in problem.message


def test_duplicate_channel__located_at_the_second_step() -> None:
    """A channel listed twice is reported at the second listing, not at the top of the file."""
    problem = only(edit({16: "  - wecom:", 17: "      text: hi", 18: None}))
    assert "channel 'wecom' is listed twice" in problem.message
    assert at(problem) == (FILE, 16, 5)


def test_channel_step__two_channels_in_one_item() -> None:
    """One list item names one channel."""
    problem = only(edit({16: "  - sms: {template_code: S}", 17: "    ai_call: {scenario: s}", 18: None}))
    assert problem.line == 16
    assert "names one channel" in problem.message


# --------------------------------------------------------------------------- text values


@pytest.mark.parametrize(("line", "number", "column", "shown"), [
    ("    - purchased: {sku: 012345, within_days: 30}", 10, 24, '"012345"'),
    ("    - member: {tier: 3}", 10, 22, '"3"'),
    ("    - tag: 12", 10, 12, '"12"'),
    ("    - purchased: {platform: yes}", 10, 29, '"yes"'),
    ("    - member: {city: {in: [上海, 1]}}", 10, 32, '"1"'),
    ("    - event: {type: fair_visit, within_days: 3, where: {fair: 2}}", 10, 63, '"2"'),
])
def test_text_value__number_says_to_quote_it(line: str, number: int, column: int, shown: str) -> None:
    """`sku: 012345`, `tier: 3`, `tag: 12` (and YAML booleans) are errors that say to quote the value."""
    problem = only(edit({10: line}))
    assert at(problem) == (FILE, number, column)
    assert "quote it" in problem.message
    assert shown in problem.message


def test_text_value__quoted_and_arbitrary_data_loads() -> None:
    """Category, sku, tag and platform values are data: anything quoted (or Chinese) is fine."""
    playbook, _ = load_text(edit({
        7: '    - last_purchase: {category: 宠物奶粉, sku: "012345", platform: "3", days_ago: 21}',
        10: '    - tag: "12"',
    }), FILE)
    assert playbook.audience.none is not None


# --------------------------------------------------------------------------- templates


def test_template__syntax_error() -> None:
    """An unclosed `{{` is a template syntax error at the template's value."""
    problem = only(edit({15: '      text: "{{ member.nickname "'}))
    assert at(problem) == (FILE, 15, 13)
    assert "template syntax error" in problem.message


def test_template__unknown_name_did_you_mean() -> None:
    """`{{ membr.nickname }}` names a variable that does not exist."""
    problem = only(edit({18: '      params: {name: "{{ membr.nickname }}"}'}))
    assert at(problem) == (FILE, 18, 22)
    assert "unknown name `membr`" in problem.message
    assert "did you mean 'member'?" in problem.message


def test_template__unknown_member_field_did_you_mean() -> None:
    """`member.nicknam` does not exist; did you mean nickname."""
    problem = only(edit({18: '      params: {name: "{{ member.nicknam }}"}'}))
    assert at(problem) == (FILE, 18, 22)
    assert "`member.nicknam` does not exist" in problem.message
    assert "did you mean 'nickname'?" in problem.message


def test_template__unknown_coupon_field() -> None:
    """`offer.coupon.thresh` suggests threshold."""
    problem = only(edit({18: '      params: {name: "{{ offer.coupon.thresh }}"}'}))
    assert at(problem) == (FILE, 18, 22)
    assert "did you mean 'threshold'?" in problem.message


def test_template__offer_without_an_offer() -> None:
    """A template using `offer` in a playbook without `offer` is an error at that template."""
    problem = only(edit({11: None, 12: None}))
    # lines 11-12 deleted: the wecom text (line 15) is now line 13
    assert at(problem) == (FILE, 13, 13)
    assert "`offer` is used but the playbook has no `offer`" in problem.message


def test_template__event_in_a_scheduled_playbook() -> None:
    """`event` exists only for event-triggered playbooks."""
    problem = only(edit({18: '      params: {name: "{{ event.type }}"}'}))
    assert at(problem) == (FILE, 18, 22)
    assert "`event` is only available to event-triggered playbooks" in problem.message


def test_template__event_in_an_event_playbook_loads() -> None:
    """The same template is fine once the trigger is an event."""
    playbook, _ = load_text(edit({4: "  event: order_created\n  delay: 30m",
                                  18: '      params: {order: "{{ event.attributes.order_id }}"}'}), FILE)
    assert playbook.is_event_triggered


def test_template__problems_in_several_templates_are_all_reported() -> None:
    """Every bad template is reported, each at its own line."""
    found = problems(edit({15: '      text: "{{ member.nicknam }}"', 18: '      params: {name: "{{ foo }}"}'}))
    assert sorted((p.line, p.column) for p in found) == [(15, 13), (18, 22)]


# --------------------------------------------------------------------------- document-level problems


def test_duplicate_ids__across_two_files(tmp_path: Path) -> None:
    """Two files with one id: the second file is reported at its id and names the first."""
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text(BASE, encoding="utf-8")
    second.write_text(BASE, encoding="utf-8")
    with pytest.raises(PlaybookError) as info:
        load_playbooks([tmp_path])
    (problem,) = info.value.problems
    assert at(problem) == (str(second), 1, 5)
    assert "duplicate playbook id 'refill'" in problem.message
    assert str(first) in problem.message


def test_load_playbooks__reports_every_file_at_once(tmp_path: Path) -> None:
    """Problems of several files come back together, each with its own file."""
    (tmp_path / "a.yaml").write_text(edit({4: '  schedule: "0 24 * * *"'}), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(edit({1: "id: other"}, append="holdot: 1\n"), encoding="utf-8")
    (tmp_path / "c.yaml").write_text(edit({1: "id: third"}), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a playbook", encoding="utf-8")
    with pytest.raises(PlaybookError) as info:
        load_playbooks([tmp_path])
    assert [(Path(p.file).name, p.line) for p in info.value.problems] == [("a.yaml", 4), ("b.yaml", 22)]


def test_load_playbooks__missing_path(tmp_path: Path) -> None:
    """A path that does not exist is a problem naming it."""
    missing = tmp_path / "nope"
    with pytest.raises(PlaybookError) as info:
        load_playbooks([missing])
    (problem,) = info.value.problems
    assert problem.file == str(missing)
    assert "no such file or directory" in problem.message


def test_malformed_yaml__located() -> None:
    """An unclosed flow mapping is malformed YAML with a position."""
    problem = only(edit({7: "    - last_purchase: {category: pet_milk, days_ago: 21"}))
    assert problem.file == FILE
    assert problem.line is not None and 7 <= problem.line <= 8
    assert problem.message.startswith("malformed YAML")


def test_malformed_yaml__tab_indentation() -> None:
    """A tab used for indentation is malformed YAML at its line."""
    problem = only(edit({17: "\ttemplate_code: SMS_1"}))
    assert at(problem)[:2] == (FILE, 17)
    assert "malformed YAML" in problem.message


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    """An empty (or comment-only) file is a clear problem naming the file."""
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    with pytest.raises(PlaybookError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert "empty playbook" in problem.message


def test_document_marker_only(tmp_path: Path) -> None:
    """A file holding only `---` is a clear problem, not a crash."""
    path = tmp_path / "marker.yaml"
    path.write_bytes(b"---\n")
    with pytest.raises(PlaybookError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert "empty playbook" in problem.message or "a playbook is a mapping" in problem.message


def test_binary_file(tmp_path: Path) -> None:
    """A binary file (here a PNG header) is refused as not text."""
    path = tmp_path / "logo.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    with pytest.raises(PlaybookError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert "binary" in problem.message


def test_non_utf8_file__gbk(tmp_path: Path) -> None:
    """A GBK-encoded playbook is refused at the first line that is not UTF-8."""
    path = tmp_path / "gbk.yaml"
    path.write_bytes(BASE.encode("gbk"))
    with pytest.raises(PlaybookError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (str(path), 2)
    assert "UTF-8" in problem.message


def test_utf8_with_bom_loads(tmp_path: Path) -> None:
    """A UTF-8 file with a byte-order mark (as Windows editors save it) loads."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(BASE.encode("utf-8-sig"))
    assert load_file(path).playbook.name == "复购提醒"


@pytest.mark.parametrize("text", ["- id: refill\n- name: x\n", "just some words\n", "42\n"])
def test_top_level_not_a_mapping(text: str) -> None:
    """A top-level list or scalar says a playbook is a mapping."""
    problem = only(text)
    assert at(problem) == (FILE, 1, 1)
    assert "a playbook is a mapping" in problem.message


def test_two_yaml_documents() -> None:
    """A second document is reported where it starts."""
    problem = only(BASE + "---\nid: second\n")
    assert at(problem) == (FILE, 23, 1)
    assert "one playbook per file" in problem.message


def test_duplicate_key__top_level() -> None:
    """A key given twice is reported at its second occurrence."""
    problem = only(edit(append="name: 又一个\n"))
    assert at(problem) == (FILE, 22, 1)
    assert "duplicate key 'name'" in problem.message


def test_duplicate_key__nested() -> None:
    """Duplicate keys inside a flow mapping are found too."""
    problem = only(edit({12: "  coupon: {threshold: 250, discount: 50, discount: 60}"}))
    assert at(problem) == (FILE, 12, 42)
    assert "duplicate key 'discount'" in problem.message


@pytest.mark.parametrize("bad_id", ["Pet-Milk", "-pet", "pet_milk", "pet milk", "宠物", '""', "a" * 65])
def test_id_pattern(bad_id: str) -> None:
    """Ids are lowercase letters, digits and '-', starting with a letter or digit."""
    problem = only(edit({1: f"id: {bad_id}"}))
    assert at(problem) == (FILE, 1, 5)
    if len(bad_id) > 64:
        assert "64" in problem.message
    else:
        assert "lowercase letters, digits and '-'" in problem.message


def test_id__number_says_to_quote_it() -> None:
    """`id: 12` is a YAML number."""
    problem = only(edit({1: "id: 12"}))
    assert at(problem) == (FILE, 1, 5)
    assert "quote it" in problem.message


def test_missing_required_key() -> None:
    """A playbook without `name` names the missing key."""
    problem = only(edit({2: None}))
    assert problem.line == 1
    assert "missing required key 'name'" in problem.message


def test_triggering_order__in_a_scheduled_playbook_located_at_the_leaf() -> None:
    """`triggering_order` needs an event trigger; the problem points at the leaf, not at line 1."""
    problem = only(edit({10: "    - triggering_order: {paid: false}"}))
    assert "`triggering_order` needs an event trigger" in problem.message
    assert at(problem) == (FILE, 10, 7)


def test_triggering_order__in_an_event_playbook_loads() -> None:
    """The same leaf is fine with an event trigger (and inside `none`)."""
    playbook, _ = load_text(edit({4: "  event: order_created", 10: "    - triggering_order: {paid: true}"}), FILE)
    assert playbook.is_event_triggered


def test_offer__coupon_and_tiers_together() -> None:
    """An offer is either `by` + `tiers` or a single `coupon`, not both."""
    problem = only(edit({12: "  coupon: {threshold: 250, discount: 50}\n  by: total_spend\n"
                             "  tiers:\n    - {min: 1, coupon: {threshold: 10, discount: 1}}"}))
    assert at(problem) == (FILE, 12, 3)
    assert "not both" in problem.message


def test_offer__by_without_tiers() -> None:
    """`by` and `tiers` go together."""
    problem = only(edit({12: "  by: total_spend"}))
    assert problem.line == 12
    assert "`by` and `tiers` go together" in problem.message


def test_offer__unknown_metric_did_you_mean() -> None:
    """`by: avg_order_valu` lists the metrics and suggests the closest."""
    problem = only(edit({12: "  by: avg_order_valu\n  tiers:\n    - {min: 1, coupon: {threshold: 10, discount: 1}}"}))
    assert at(problem) == (FILE, 12, 7)
    assert "did you mean 'avg_order_value'?" in problem.message


@pytest.mark.parametrize(("value", "substance"), [("101", "less than or equal to 100"),
                                                  ("-1", "greater than or equal to 0")])
def test_holdout__out_of_range(value: str, substance: str) -> None:
    """`holdout` is a percentage, 0 to 100."""
    problem = only(edit({21: f"holdout: {value}"}))
    assert at(problem) == (FILE, 21, 10)
    assert substance in problem.message


def test_unknown_timezone() -> None:
    """`timezone: Mars/Base` is not an IANA zone."""
    problem = only(edit(append="timezone: Mars/Base\n"))
    assert at(problem) == (FILE, 22, 11)
    assert "unknown timezone 'Mars/Base'" in problem.message


@pytest.mark.parametrize("name", ["Asia", "America", "Etc", "../../etc/passwd", ""])
def test_unknown_timezone__folder_or_path_names(name: str) -> None:
    """`timezone: Asia` (a folder of the zone database, e.g. a truncated Asia/Shanghai) is a problem, not a crash."""
    problem = only(edit(append=f"timezone: '{name}'\n"))
    assert at(problem) == (FILE, 22, 11)
    assert f"unknown timezone {name!r}" in problem.message


def test_several_problems_in_one_file_are_all_reported() -> None:
    """`siyu check` shows every problem of a file, not only the first."""
    found = problems(edit({4: '  schedule: "0 24 * * *"', 21: "holdout: 101"}))
    assert sorted(p.line for p in found if p.line is not None) == [4, 21]


# --------------------------------------------------------------------------- what must load


def test_grammar_example__verbatim_loads() -> None:
    """The issue's grammar example, comments and all, is a valid playbook with the values it shows."""
    playbook, _ = load_text(GRAMMAR_EXAMPLE, "pet-milk-refill.yaml")
    assert playbook.id == "pet-milk-refill"
    assert playbook.name == "宠物奶粉第21天复购提醒"
    assert playbook.trigger.schedule == "0 10 * * *"
    assert playbook.offer is not None and playbook.offer.by == "avg_order_value"
    assert [t.coupon.discount for t in playbook.offer.tiers or []] == [50, 20]
    assert [step.channel for step in playbook.channels] == ["wecom", "sms"]
    assert playbook.limits.cooldown_days == 28 and playbook.limits.max_per_run == 5000
    assert playbook.holdout == 10


@pytest.mark.parametrize(("old", "new"), [
    (('  schedule: "0 10 * * *"            # 5-field cron, in the playbook timezone\n'
      "  # event: order_created            # or: evaluated once per event of this type ...\n"
      "  # delay: 30m "),
     "  event: order_created\n  delay: 30m\n  # "),
    ("  by: avg_order_value ", "  coupon: {threshold: 250, discount: 50, valid_days: 7}\n  # "),
    ("  # - template:", "  - template:"),
    ("  # - ai_call:", "  - ai_call:"),
])
def test_grammar_example__commented_alternatives_load(old: str, new: str) -> None:
    """The alternatives the example shows in comments (event trigger, single coupon, template, ai_call) load."""
    assert old in GRAMMAR_EXAMPLE
    text = GRAMMAR_EXAMPLE.replace(old, new)
    if "coupon: {threshold: 250" in new:
        text = text.replace("  tiers:  ", "  # tiers:").replace("    - {min: ", "    # - {min: ")
    playbook: Playbook = load_text(text, "pet-milk-refill.yaml")[0]
    assert playbook.id == "pet-milk-refill"


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.y*ml")) if directory.is_dir() else []


@pytest.mark.skipif(not _yaml_files(ACCEPTANCE_PLAYBOOKS), reason="no shared acceptance playbooks here")
def test_acceptance_playbooks__all_load() -> None:
    """Every public acceptance playbook (written outside the project, verbatim grammar) loads."""
    loaded = load_playbooks([ACCEPTANCE_PLAYBOOKS])
    assert len(loaded) == len(_yaml_files(ACCEPTANCE_PLAYBOOKS))


@pytest.mark.parametrize("path", _yaml_files(SHIPPED_PLAYBOOKS) or [pytest.param(None, marks=pytest.mark.skip(
    reason="playbooks/ holds no playbook yet"))], ids=lambda p: p.name if p else "none")
def test_shipped_playbooks__each_loads(path: Path) -> None:
    """Every example playbook in playbooks/ passes `siyu check`."""
    assert load_file(path).playbook.id


@pytest.mark.skipif(not _yaml_files(SHIPPED_PLAYBOOKS), reason="playbooks/ holds no playbook yet")
def test_shipped_playbooks__ids_unique() -> None:
    """The shipped examples load together (no duplicate ids)."""
    assert len(load_playbooks([SHIPPED_PLAYBOOKS])) == len(_yaml_files(SHIPPED_PLAYBOOKS))
