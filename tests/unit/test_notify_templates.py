"""Notify templates: complete for every flow, channel and language (a gap is a startup error), rendered from data."""
import copy

import pytest
from nameko.containers import ServiceContainer

from services.notify import domain, templates
from services.notify.service import NotifyService
from services.notify.templates import TemplateError

SAMPLES = {
    "otp": {"code": "123456"},
    "member_joined": {"member_id": "m1", "user_id": "u1", "union_id": "g1", "union_code": "5101040001",
                      "region_code": "510104", "occupation_group": "courier", "status": "active", "card_no": "C0001",
                      "joined_at": "2026-01-01T00:00:00Z", "phone_masked": "138****5678"},
    "member_rejected": {"member_id": "m1", "user_id": "u1", "union_id": "g1", "reason": "材料不全"},
    "member_transferred": {"member_id": "m1", "user_id": "u1", "union_id": "g2", "union_code": "5101050002",
                           "region_code": "510105", "occupation_group": "courier", "status": "active",
                           "from_union_id": "g1", "from_union_code": "5101040001"},
    "coupon_claimed": {"coupon_id": "c1", "campaign_id": "k1", "user_id": "u1", "title": "满100减20",
                       "face_value_cents": 2050, "expires_at": "2026-03-31T16:30:00Z"},
    "coupon_redeemed": {"coupon_id": "c1", "campaign_id": "k1", "user_id": "u1", "merchant_id": "mm",
                        "title": "满100减20", "face_value_cents": 2000, "redeemed_at": "2026-02-01T02:00:00Z"},
    "application_status_changed": {"application_id": "a1", "job_id": "j1", "job_title": "焊工", "employer_id": "e1",
                                   "user_id": "u1", "status": "interview"},
    "job_alert_matched": {"job_id": "j1", "title": "外卖骑手", "employer_name": "蜀道快递", "region_code": "510104",
                          "user_ids": ["u1"]},
    "announcement": {"title": "端午慰问", "body": "工会将于端午节发放慰问品。"},
}


def test_every_flow_has_every_template_and_the_startup_check_passes():
    templates.check()
    assert set(SAMPLES) == set(domain.FLOWS)


@pytest.mark.parametrize("template", sorted(domain.FLOWS))
@pytest.mark.parametrize("lang", templates.LANGS)
def test_each_template_renders_from_its_event_data(template, lang):
    for channel in domain.FLOWS[template].channels:
        out = templates.render(template, channel, SAMPLES[template], lang)
        for part in templates.PARTS[channel]:
            assert out[part] and "{" not in out[part] and "}" not in out[part]
        assert set(out["params"]) <= set(templates.context(template, SAMPLES[template], lang))


def test_rendered_values():
    zh = templates.render("coupon_claimed", "inbox", SAMPLES["coupon_claimed"], "zh")
    assert "20.50 元" in zh["body"] and "2026-04-01" in zh["body"]  # expiry shown as the China date
    en = templates.render("application_status_changed", "inbox", SAMPLES["application_status_changed"], "en")
    assert en["body"] == 'Your application for "焊工": invited to an interview.'
    sms = templates.render("otp", "sms", {"code": "654321"})
    assert "654321" in sms["text"] and sms["params"] == {"code": "654321"}
    # an unknown language falls back to Chinese
    assert templates.render("member_joined", "sms", SAMPLES["member_joined"], "fr")["text"].startswith("【")


def test_missing_template_is_an_error():
    broken = dict(templates.TEMPLATES)
    del broken[("coupon_redeemed", "push")]
    with pytest.raises(TemplateError, match="coupon_redeemed/push: no template"):
        templates.check(broken)


def test_missing_language_variant_or_part_is_an_error():
    broken = copy.deepcopy(templates.TEMPLATES)
    del broken[("member_joined", "inbox")]["en"]
    with pytest.raises(TemplateError, match="member_joined/inbox: no en variant"):
        templates.check(broken)
    broken = copy.deepcopy(templates.TEMPLATES)
    del broken[("member_joined", "push")]["zh"]["body"]
    with pytest.raises(TemplateError, match="member_joined/push/zh: no body"):
        templates.check(broken)


def test_template_naming_a_value_the_event_lacks_is_an_error():
    broken = copy.deepcopy(templates.TEMPLATES)
    broken[("coupon_claimed", "inbox")]["zh"]["body"] = "{phone}"
    with pytest.raises(TemplateError, match="unknown value"):
        templates.check(broken)


def test_a_new_flow_without_templates_is_an_error():
    flows = dict(domain.FLOWS, payday=domain.Flow("account", ("inbox",), None))
    with pytest.raises(TemplateError, match="payday/inbox: no template"):
        templates.check(flows=flows)


def test_the_service_does_not_start_with_a_missing_template(monkeypatch):
    broken = dict(templates.TEMPLATES)
    del broken[("member_joined", "sms")]
    monkeypatch.setattr(templates, "TEMPLATES", broken)
    container = ServiceContainer(NotifyService, {"AMQP_URI": "memory://", "MONGO_URI": "mongodb://127.0.0.1:1"})
    settings = next(d for d in container.dependencies if d.attr_name == "settings")
    with pytest.raises(TemplateError, match="member_joined/sms"):
        settings.setup()  # what container.start() runs first
