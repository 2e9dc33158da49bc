"""Identity checks and masking: resident ID (GB 11643-1999), USCC (GB 32100-2015), mainland mobile numbers."""
import datetime
import re

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
PHONE_RE = re.compile(r"^1[3-9]\d{9}$")
MIN_MEMBER_AGE = 16


def id_check_char(first17):
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS)) % 11]


def parse_resident_id(value):
    """Return (normalised, birth_date) or raise ValueError with the reason.

    Checks the format, the birth date (a real date, not in the future) and the check character. The region code is
    only checked for shape: python-stdnum's table rejects valid numbers whose region is newer than the birth year.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string")
    v = value.strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", v):
        raise ValueError("must be 18 characters: 17 digits and a digit or X")
    if v[:2] in ("00",) or v[0] == "0":
        raise ValueError("region code is not valid")
    try:
        birth = datetime.date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        raise ValueError("birth date is not a real date")
    if birth.year < 1900 or birth > datetime.date.today():
        raise ValueError("birth date is not possible")
    if id_check_char(v[:17]) != v[17]:
        raise ValueError("check character is wrong")
    return v, birth


def is_valid_resident_id(value):
    try:
        parse_resident_id(value)
        return True
    except ValueError:
        return False


def age_on(birth, today=None):
    today = today or datetime.date.today()
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def uscc_check_char(first17):
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(value):
    if not isinstance(value, str) or len(value) != 18:
        return False
    v = value.upper()
    if any(c not in USCC_ALPHABET for c in v):
        return False
    return uscc_check_char(v[:17]) == v[17]


def is_mainland_mobile(value):
    return isinstance(value, str) and bool(PHONE_RE.fullmatch(value))


def mask_id_number(value):
    """``510104198001011236`` -> ``5101**********1236``."""
    if not value:
        return None
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value):
    """``13812345678`` -> ``138****5678``."""
    if not value:
        return None
    return value[:3] + "****" + value[-4:]


def mask_code(value):
    """A one-time code in a log line: nothing of it."""
    return "*" * len(value or "")


def make_resident_id(region="510104", birth="19900101", seq=123):
    """A valid resident ID number (tests, seed data): region + birth date + 3-digit sequence + check character."""
    first17 = "%s%s%03d" % (region, birth, seq % 1000)
    return first17 + id_check_char(first17)


def make_uscc(body="91510100MA6"):
    """A valid USCC: ``body`` padded to 17 characters with digits, plus its check character."""
    first17 = (body + "0123456789ABCDEFGH")[:17]
    return first17 + uscc_check_char(first17)
