"""Each adapter's `check_message` at its boundary: the last value the vendor takes passes, the first
it refuses names the rule. The same function guards `send` and decides `suppressed/invalid_message`."""

from __future__ import annotations

from typing import Any

from channels import ADAPTERS, UNCONFIGURED_CHECKS, message_checks
from channels.aliyun.outbound_bot import AliyunOutboundBotChannel, AliyunOutboundBotSettings
from channels.aliyun.sms import AliyunSmsChannel, AliyunSmsSettings
from channels.aliyun.voice import AliyunVoiceChannel, AliyunVoiceSettings
from channels.base import ChecksMessages
from channels.log import LogChannel, LogSettings
from channels.tencent.sms import TencentSmsChannel, TencentSmsSettings
from channels.wechat.template import WechatTemplateChannel, WechatTemplateSettings
from channels.wechat.wecom import MAX_TEXT_BYTES, WecomChannel
from engine.config import Settings

PHONE = {"phone": "13800138000"}


def _aliyun(**extra: Any) -> AliyunSmsSettings:
    return AliyunSmsSettings.model_validate({"adapter": "aliyun_sms", "access_key_id": "LTAI",
                                             "access_key_secret": "secret", "sign_name": "麦德氏", **extra})


def _tencent(**extra: Any) -> TencentSmsSettings:
    return TencentSmsSettings.model_validate(
        {"adapter": "tencent_sms", "secret_id": "AKID", "secret_key": "key", "sdk_app_id": "1400000000",
         "sign_name": "麦德氏", "templates": {"SMS_1": {"id": "1234567", "params": ["name", "discount"]}}, **extra})


def test_wechat_template__20_characters_pass_21_do_not() -> None:
    settings = WechatTemplateSettings.model_validate({"adapter": "wechat_template", "app_id": "wx", "app_secret": "s"})
    check = WechatTemplateChannel.message_check(settings)
    message = {"template_id": "TPL", "data": {"thing1": "一" * 20, "time2": "2026-11-30"}}
    assert check(message, {"oa_openid": "o1"}) is None
    message["data"]["thing1"] = "一" * 21
    assert check(message, {"oa_openid": "o1"}) == "data.thing1: 21 characters, at most 20 allowed"
    assert check({"template_id": "TPL", "data": {"thing1": "a\nb"}}, {}) == "data.thing1: line breaks are not allowed"
    assert check({"template_id": "TPL", "data": {}}, {}) == "no keyword data in the message"
    assert check({"data": {"thing1": "x"}}, {}) == "no template_id in the message"


def test_wechat_template__the_accounts_limit_is_used() -> None:
    settings = WechatTemplateSettings.model_validate({"adapter": "wechat_template", "app_id": "wx", "app_secret": "s",
                                                      "max_keyword_length": 5})
    check = WechatTemplateChannel.message_check(settings)
    assert check({"template_id": "TPL", "data": {"k": "12345"}}, {}) is None
    assert check({"template_id": "TPL", "data": {"k": "123456"}}, {}) == "data.k: 6 characters, at most 5 allowed"


def test_aliyun_sms__required_parameters_and_length() -> None:
    check = AliyunSmsChannel.message_check(_aliyun(templates={"SMS_1": ["name", "discount"]}))
    assert check({"template_code": "SMS_1", "params": {"name": "一" * 35, "discount": "8折"}}, PHONE) is None
    assert check({"template_code": "SMS_1", "params": {"name": "一" * 36, "discount": "8折"}}, PHONE) == \
        "template SMS_1: parameters name longer than 35 characters"
    assert check({"template_code": "SMS_1", "params": {"name": "小林"}}, PHONE) == \
        "template SMS_1: missing parameters discount"
    assert check({"params": {}}, PHONE) == "no template_code"
    assert check({"template_code": "SMS_7", "params": {"anything": "x"}}, PHONE) is None  # not listed: any params


def test_tencent_sms__template_must_be_mapped_with_every_parameter() -> None:
    check = TencentSmsChannel.message_check(_tencent(param_max_length=12))
    assert check({"template_code": "SMS_1", "params": {"name": "一" * 12, "discount": "8折"}}, PHONE) is None
    assert check({"template_code": "SMS_1", "params": {"name": "一" * 13, "discount": "8折"}}, PHONE) == \
        "a parameter exceeds 12 characters"
    assert check({"template_code": "SMS_1", "params": {"name": "小林"}}, PHONE) == \
        "missing template parameters: ['discount']"
    assert check({"template_code": "SMS_2", "params": {}}, PHONE) == \
        "template_code 'SMS_2' has no Tencent template in `templates`"


def test_sms_settings__which_template_codes_a_provider_can_send() -> None:
    assert _tencent().maps_template("SMS_1") and not _tencent().maps_template("SMS_2")
    assert _aliyun().maps_template("SMS_2")  # Aliyun sends its own codes as they are
    assert not _aliyun(templates={"SMS_1": []}).maps_template("SMS_2")
    assert _aliyun(templates={"SMS_1": []}).template_codes() == {"SMS_1"}


def test_ai_call__scenario_configured_and_one_callee() -> None:
    voice = AliyunVoiceChannel.message_check(AliyunVoiceSettings.model_validate(
        {"adapter": "aliyun_voice", "access_key_id": "k", "access_key_secret": "s",
         "scenarios": {"points": {"tts_code": "TTS_1"}}}))
    bot = AliyunOutboundBotChannel.message_check(AliyunOutboundBotSettings.model_validate(
        {"adapter": "aliyun_outbound_bot", "access_key_id": "k", "access_key_secret": "s", "instance_id": "i",
         "scenarios": {"points": {"job_group_id": "g"}}}))
    for check in (voice, bot):
        assert check({"scenario": "points"}, PHONE) is None
        assert check({"scenario": "other"}, PHONE) == "no scenario 'other' configured"
        assert check({"scenario": "points"}, {"phone": "13800138000,13900139000"}) == \
            "one callee per call: phone '138****8000,139****9000' names several numbers"


def test_wecom__text_up_to_4000_bytes() -> None:
    check = WecomChannel.message_check(None)
    address = {"wecom_external_userid": "wm1", "wecom_staff_userid": "s1"}
    assert check({"text": "a" * MAX_TEXT_BYTES}, address) is None
    assert check({"text": "a" * (MAX_TEXT_BYTES - 2) + "一"}, address) == "text: 4001 bytes, at most 4000 allowed"
    assert check({"text": ""}, address) == "no text in the message"


def test_message_checks__from_settings_alone() -> None:
    """Adapters with rules implement `ChecksMessages`; `log` has none; a channel not configured gets
    only the settings-free rules (the `template` channel's); with a fallback the primary's rules apply."""
    assert not isinstance(LogChannel, ChecksMessages)
    assert {name for name, cls in ADAPTERS.items() if isinstance(cls, ChecksMessages)} == {
        "aliyun_sms", "tencent_sms", "wechat_template", "wecom", "aliyun_voice", "aliyun_outbound_bot"}
    assert set(message_checks({})) == set(UNCONFIGURED_CHECKS) == {"template"}
    assert set(message_checks({"template": LogSettings(adapter="log")})) == set()
    settings = Settings.model_validate({"channels": {"sms": {
        "adapter": "tencent_sms", "secret_id": "AKID", "secret_key": "key", "sdk_app_id": "1",
        "sign_name": "麦德氏", "templates": {"SMS_1": {"id": "1", "params": []}},
        "fallback": {"adapter": "aliyun_sms", "access_key_id": "LTAI", "access_key_secret": "s",
                     "sign_name": "麦德氏"}}}})
    check = message_checks(dict(settings.channels))["sms"]
    assert check({"template_code": "SMS_9", "params": {}}, PHONE) == \
        "template_code 'SMS_9' has no Tencent template in `templates`"  # the primary (Tencent) rule
