"""Secrets in the config: each one `${VAR}`, never echoed in a message, refused by `siyu run` when written.

A secret written in the file (a key of SECRET_KEYS anywhere under `channels:`, a password in
`database.url`) is an error for `siyu run` and a located warning for every other command, unless
`allow_literal_secrets: true`. Whatever goes wrong with a secret or with a value taken from the
environment, no message shows the value. The CLI is run in process (`check` stays offline, `run`
stops at its config).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.config import load_config
from engine.errors import ConfigError, Problem

SECRET = "LTAIsecretValue9f8e7d6c"
"""A secret's value: it must never appear in a message."""

SMS = """\
channels:
  sms:
    adapter: aliyun_sms
    access_key_id: LTAI5tKeyId
    access_key_secret: {secret}
    sign_name: 麦德氏
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "siyu.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, strict_secrets: bool = False) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, strict_secrets=strict_secrets)
    return caught.value.problems


def test_load_config__a_numeric_secret_is_never_echoed(tmp_path: Path) -> None:
    """`access_key_secret: 8723461927364509` (a YAML number) is an error at its line that does not show it."""
    path = write(tmp_path, SMS.format(secret="8723461927364509"))
    problems = problems_of(path)
    assert [(p.line, p.column, p.severity) for p in problems] == [(5, 24, "warning"), (5, 24, "error")]
    assert all("8723461927364509" not in str(p) for p in problems), problems
    assert "(the value is not shown)" in problems[1].message


def test_load_config__a_value_from_the_environment_is_never_echoed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Values that came from `${VAR}` and fail validation (a validator that quotes its input, an adapter
    name) are errors at their line that do not show the value."""
    monkeypatch.setenv("SIYU_LISTEN", "listen-on-S3cretHost")
    monkeypatch.setenv("SIYU_ADAPTER", "adapter-S3cretName")
    path = write(tmp_path, 'http: {listen: "${SIYU_LISTEN}"}\nchannels:\n  sms: {adapter: "${SIYU_ADAPTER}"}\n')
    problems = problems_of(path)
    assert [(p.line, p.severity) for p in problems] == [(1, "error"), (3, "error")]
    assert all("S3cret" not in str(p) for p in problems), problems


def test_load_config__a_secret_written_in_the_file_is_a_located_warning_naming_the_key(tmp_path: Path) -> None:
    """Outside `siyu run` a written secret loads, with a warning at its line that names the key, not the value."""
    settings, warnings = load_config(write(tmp_path, SMS.format(secret=SECRET)))
    assert settings.channels["sms"].access_key_secret == SECRET  # type: ignore[union-attr]
    (warning,) = warnings
    assert (warning.line, warning.column, warning.is_warning) == (5, 24, True)
    assert warning.message.startswith("channels.sms.access_key_secret is a secret written in the file: write it as "
                                      'one ${VAR} (e.g. "${SIYU_SMS_ACCESS_KEY_SECRET}")')
    assert SECRET not in str(warning)


def test_load_config__strict_a_secret_written_in_the_file_is_an_error(tmp_path: Path) -> None:
    """With `strict_secrets` (the daemon) the same finding is an error: the config does not load."""
    (problem,) = problems_of(write(tmp_path, SMS.format(secret=SECRET)), strict_secrets=True)
    assert (problem.line, problem.severity) == (5, "error")
    assert "channels.sms.access_key_secret" in problem.message and SECRET not in str(problem)


def test_load_config__a_reference_is_no_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`"${ALIYUN_ACCESS_KEY_SECRET}"` is resolved from the environment and is neither an error nor a warning."""
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_SECRET", SECRET)
    settings, warnings = load_config(write(tmp_path, SMS.format(secret='"${ALIYUN_ACCESS_KEY_SECRET}"')),
                                     strict_secrets=True)
    assert warnings == []
    assert settings.channels["sms"].access_key_secret == SECRET  # type: ignore[union-attr]


def test_load_config__a_reference_inside_text_is_still_a_written_secret(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret must be exactly one `${VAR}`: `"prefix-${VAR}"` writes part of it in the file."""
    monkeypatch.setenv("PART", "x")
    (problem,) = problems_of(write(tmp_path, SMS.format(secret='"prefix-${PART}"')), strict_secrets=True)
    assert "channels.sms.access_key_secret is a secret written in the file" in problem.message
    assert "prefix" not in problem.message


def test_load_config__fallback_and_rotating_callback_secrets_are_checked_each(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A `fallback:` provider's secret_key is a secret too; a `callback_secret` list (a rotation) is
    checked element by element: only the written one is a finding."""
    monkeypatch.setenv("ALIYUN_SECRET", SECRET)
    monkeypatch.setenv("CALLBACK_OLD", "o" * 32)
    path = write(tmp_path, SMS.format(secret='"${ALIYUN_SECRET}"') + (
        '    callback_secret: ["${CALLBACK_OLD}", written-callback-secret-0123456789abcdef]\n'
        "    fallback:\n"
        "      adapter: tencent_sms\n"
        "      secret_id: AKIDexample\n"
        "      secret_key: tencent-written-secret-key\n"
        '      sdk_app_id: "1400000000"\n'
        "      sign_name: 麦德氏\n"))
    problems = problems_of(path, strict_secrets=True)  # callback_secret may also be unknown to this version
    findings = [p for p in problems if "a secret written in the file" in p.message]
    assert [(p.line, p.message.split(" ")[0]) for p in findings] == [
        (7, "channels.sms.callback_secret[1]"), (11, "channels.sms.fallback.secret_key")]
    assert all("written-callback" not in str(p) and "tencent-written" not in str(p) for p in problems)


def test_load_config__a_database_password_must_be_a_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`database.url` with a written password is a finding (never showing it); `${VAR}` as the password,
    the whole URL from the environment, or no password at all are fine."""
    monkeypatch.setenv("SIYU_DB_PASSWORD", "pw")
    monkeypatch.setenv("SIYU_DATABASE_URL", "postgresql://siyu:pw@db/siyu")
    for url in ("postgresql://siyu:${SIYU_DB_PASSWORD}@db/siyu", "${SIYU_DATABASE_URL}", "postgresql://siyu@db/siyu",
                "sqlite:///demo.db"):
        assert load_config(write(tmp_path, f'database: {{url: "{url}"}}\n'))[1] == [], url
    for url in ("postgresql://siyu:Hunter2Password@db/siyu", "postgresql://siyu@db/siyu?password=Hunter2Password"):
        (warning,) = load_config(write(tmp_path, f'database: {{url: "{url}"}}\n'))[1]
        assert (warning.line, warning.is_warning) == (1, True)
        assert warning.message.startswith("database.url has its password written in the file")
        assert "Hunter2" not in str(warning)


def test_load_config__allow_literal_secrets_silences_the_finding(tmp_path: Path) -> None:
    """`allow_literal_secrets: true` (a local trial): written secrets load, even for the daemon, with no warning."""
    path = write(tmp_path, "allow_literal_secrets: true\ndatabase: {url: 'postgresql://a:b@db/siyu'}\n"
                 + SMS.format(secret=SECRET))
    settings, warnings = load_config(path, strict_secrets=True)
    assert (settings.allow_literal_secrets, warnings) == (True, [])


def test_cli_run__a_written_secret_is_a_located_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`siyu run` refuses to start: exit 1, the problem at file:line:col naming the key, never the value."""
    path = write(tmp_path, SMS.format(secret=SECRET))
    assert main(["run", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{path}:5:24: channels.sms.access_key_secret is a secret written in the file")
    assert SECRET not in captured.out + captured.err


def test_cli_check__a_written_secret_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`siyu check` prints the same finding as a warning, counts it and exits 0 (1 with --strict)."""
    (tmp_path / "playbooks").mkdir()
    path = write(tmp_path, f"playbooks: {tmp_path / 'playbooks'}\n" + SMS.format(secret=SECRET))
    assert main(["check", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{path}:6:24: warning: channels.sms.access_key_secret is a secret written")
    assert captured.out.endswith("; 1 warning\n")
    assert main(["check", "--strict", "--config", str(path)]) == 1
    assert SECRET not in captured.out + captured.err + "".join(capsys.readouterr())
