"""Message templates: one per notification type and channel, Chinese by default with an English variant.

A template is rendered from the originating event's data plus a few derived values (``face_value`` in yuan,
``expires_on`` as a local date, ``status_label``). ``check()`` runs at container setup: a flow whose template is
missing for one of its channels or languages, or a template naming a value its event does not carry, stops the
service from starting instead of being skipped silently.
"""
import string

from unionhub_kit import catalog, events

from .domain import CST, FLOWS

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

# inbox and push carry a title and a body; SMS carries one text
PARTS = {"inbox": ("title", "body"), "push": ("title", "body"), "sms": ("text",)}

STATUS_LABELS = {
    "zh": {"submitted": "已投递", "viewed": "已被查看", "interview": "邀请面试", "offer": "已录用", "rejected": "未通过"},
    "en": {"submitted": "submitted", "viewed": "viewed", "interview": "invited to an interview", "offer": "offered",
           "rejected": "not successful"},
}

TEMPLATES = {
    ("otp", "sms"): {
        "zh": {"text": "【职工之家】您的登录验证码为{code}，5分钟内有效，请勿告诉他人。"},
        "en": {"text": "[UnionHub] Your login code is {code}. It expires in 5 minutes; do not share it."},
    },
    ("member_joined", "inbox"): {
        "zh": {"title": "欢迎加入工会", "body": "您已成为工会会员，会员卡号 {card_no}。入会福利已为您准备好，快去看看吧。"},
        "en": {"title": "Welcome to the union", "body": "You are now a union member, card number {card_no}. "
                                                        "Your welcome benefits are waiting for you."},
    },
    ("member_joined", "sms"): {
        "zh": {"text": "【职工之家】欢迎加入工会！您的会员卡号为{card_no}。"},
        "en": {"text": "[UnionHub] Welcome to the union! Your card number is {card_no}."},
    },
    ("member_joined", "push"): {
        "zh": {"title": "欢迎加入工会", "body": "会员卡号 {card_no}"},
        "en": {"title": "Welcome to the union", "body": "Card number {card_no}"},
    },
    ("member_rejected", "inbox"): {
        "zh": {"title": "入会申请未通过", "body": "很抱歉，您的入会申请未通过审核。原因：{reason}"},
        "en": {"title": "Membership application declined", "body": "Your application was declined. Reason: {reason}"},
    },
    ("member_rejected", "push"): {
        "zh": {"title": "入会申请未通过", "body": "原因：{reason}"},
        "en": {"title": "Membership application declined", "body": "Reason: {reason}"},
    },
    ("member_transferred", "inbox"): {
        "zh": {"title": "转会成功", "body": "您的会员关系已转入新的工会组织（{union_code}）。"},
        "en": {"title": "Transfer complete", "body": "Your membership has moved to union {union_code}."},
    },
    ("member_transferred", "push"): {
        "zh": {"title": "转会成功", "body": "会员关系已转入 {union_code}"},
        "en": {"title": "Transfer complete", "body": "Membership moved to {union_code}"},
    },
    ("coupon_claimed", "inbox"): {
        "zh": {"title": "领券成功", "body": "您已获得「{title}」优惠券，面值 {face_value} 元，请在 {expires_on} 前使用。"},
        "en": {"title": "Coupon received", "body": "You received the coupon \"{title}\" worth {face_value} yuan; "
                                                   "use it by {expires_on}."},
    },
    ("coupon_claimed", "push"): {
        "zh": {"title": "领券成功", "body": "「{title}」{face_value} 元"},
        "en": {"title": "Coupon received", "body": "{title}: {face_value} yuan"},
    },
    ("coupon_redeemed", "inbox"): {
        "zh": {"title": "优惠券已核销", "body": "您的「{title}」优惠券（面值 {face_value} 元）已于 {redeemed_on} 核销。"},
        "en": {"title": "Coupon redeemed", "body": "Your coupon \"{title}\" ({face_value} yuan) was redeemed on "
                                                  "{redeemed_on}."},
    },
    ("coupon_redeemed", "push"): {
        "zh": {"title": "优惠券已核销", "body": "「{title}」{face_value} 元"},
        "en": {"title": "Coupon redeemed", "body": "{title}: {face_value} yuan"},
    },
    ("application_status_changed", "inbox"): {
        "zh": {"title": "求职进展", "body": "您投递的「{job_title}」有新进展：{status_label}。"},
        "en": {"title": "Application update", "body": "Your application for \"{job_title}\": {status_label}."},
    },
    ("application_status_changed", "push"): {
        "zh": {"title": "求职进展", "body": "「{job_title}」{status_label}"},
        "en": {"title": "Application update", "body": "{job_title}: {status_label}"},
    },
    ("job_alert_matched", "inbox"): {
        "zh": {"title": "职位订阅提醒", "body": "{employer_name} 发布了新职位「{title}」，符合您的订阅条件。"},
        "en": {"title": "Job alert", "body": "{employer_name} posted \"{title}\", which matches your job alert."},
    },
    ("job_alert_matched", "push"): {
        "zh": {"title": "职位订阅提醒", "body": "{employer_name}：{title}"},
        "en": {"title": "Job alert", "body": "{employer_name}: {title}"},
    },
    ("announcement", "inbox"): {
        "zh": {"title": "{title}", "body": "{body}"},
        "en": {"title": "{title}", "body": "{body}"},
    },
    ("announcement", "push"): {
        "zh": {"title": "工会公告", "body": "{title}"},
        "en": {"title": "Union announcement", "body": "{title}"},
    },
}

# values derived from the event data, by template
DERIVED = {
    "coupon_claimed": ("face_value", "expires_on"),
    "coupon_redeemed": ("face_value", "redeemed_on"),
    "application_status_changed": ("status_label",),
}
# templates not rendered from a catalogue event: the values they may use
OWN_FIELDS = {"otp": ("code",), "announcement": ("title", "body")}


class TemplateError(Exception):
    """A template is missing, incomplete, or names a value its event does not carry."""


def available_fields(template):
    flow = FLOWS[template]
    if flow.event is None:
        return set(OWN_FIELDS[template])
    return set(catalog.schema_for(*flow.event)().fields) | set(DERIVED.get(template, ()))


def placeholders(text):
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def check(templates=None, flows=None):
    """Raise ``TemplateError`` unless every flow has a complete template per channel and language."""
    templates = TEMPLATES if templates is None else templates
    flows = FLOWS if flows is None else flows
    problems = []
    for name, flow in sorted(flows.items()):
        fields = available_fields(name) if name in FLOWS else None
        for channel in flow.channels:
            variants = templates.get((name, channel))
            if variants is None:
                problems.append("%s/%s: no template" % (name, channel))
                continue
            for lang in LANGS:
                parts = variants.get(lang)
                if not parts:
                    problems.append("%s/%s: no %s variant" % (name, channel, lang))
                    continue
                for part in PARTS[channel]:
                    text = parts.get(part)
                    if not text:
                        problems.append("%s/%s/%s: no %s" % (name, channel, lang, part))
                    elif fields is not None and not placeholders(text) <= fields:
                        problems.append("%s/%s/%s: unknown value(s) %s" % (
                            name, channel, lang, sorted(placeholders(text) - fields)))
    if problems:
        raise TemplateError("notify templates are incomplete: " + "; ".join(problems))


def _local_date(value):
    return events.parse_time(value).astimezone(CST).date().isoformat()


def _yuan(cents):
    return ("%d" % (cents // 100)) if cents % 100 == 0 else "%.2f" % (cents / 100.0)


def language_neutral(template, channel):
    """Whether a template reads the same in every language (then the member's language need not be looked up)."""
    variants = TEMPLATES[(template, channel)]
    return all(variants[lang] == variants[DEFAULT_LANG] for lang in LANGS)


def context(template, data, lang):
    """The values a template may use: the event data plus the derived ones."""
    ctx = dict(data)
    if "face_value_cents" in data:
        ctx["face_value"] = _yuan(int(data["face_value_cents"]))
    if "expires_at" in data:
        ctx["expires_on"] = _local_date(data["expires_at"])
    if "redeemed_at" in data:
        ctx["redeemed_on"] = _local_date(data["redeemed_at"])
    if template == "application_status_changed":
        ctx["status_label"] = STATUS_LABELS[lang].get(data["status"], data["status"])
    return ctx


def render(template, channel, data, lang=DEFAULT_LANG):
    """``{"title", "body"}`` (inbox, push) or ``{"text"}`` (SMS), plus ``params``: the values the template used."""
    lang = lang if lang in LANGS else DEFAULT_LANG
    variants = TEMPLATES.get((template, channel))
    if variants is None:
        raise TemplateError("no template %s/%s" % (template, channel))
    ctx = context(template, data, lang)
    out, used = {}, set()
    for part in PARTS[channel]:
        text = variants[lang][part]
        used |= placeholders(text)
        out[part] = text.format_map(ctx)
    out["params"] = {k: ctx[k] for k in sorted(used)}
    return out
