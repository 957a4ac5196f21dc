"""PII detection and redaction: e-mail addresses, phone numbers, payment cards, IBANs, IP addresses.

Each hit is replaced by a typed placeholder (``<EMAIL>``, ``<PHONE>``, ``<CARD>``,
``<IBAN>``, ``<IP>``). Numbers are validated, not just pattern-matched: a card
number must pass the Luhn check, an IBAN its mod-97 checksum, an IP address
must parse, and phone numbers come from the ``phonenumbers`` library's
matcher (Google's libphonenumber rules), so a 16-digit order number that
fails Luhn is left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

KINDS = ("email", "iban", "card", "ip", "phone")
PLACEHOLDER = {k: f"<{k.upper()}>" for k in KINDS}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}(?![\w-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE_HINT = re.compile(r"\d[\d\s().+-]{5,}\d")  # 7+ characters of digits and separators: worth parsing


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def _ip_ok(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
        return True
    except ValueError:
        return False


@dataclass
class Redaction:
    text: str
    hits: Counter = field(default_factory=Counter)


class PiiRedactor:
    """Finds and replaces the configured kinds of PII in a text."""

    def __init__(self, kinds: Sequence[str] = KINDS, phone_regions: Sequence[str] = ("US", "GB")):
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kind(s): {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})")
        self.kinds = [k for k in KINDS if k in kinds]  # fixed order: the most specific patterns first
        self.phone_regions = list(phone_regions)

    def _sub(self, pattern: re.Pattern, text: str, kind: str, valid, hits: Counter) -> str:
        def repl(m: re.Match) -> str:
            if valid is None or valid(m.group(0)):
                hits[kind] += 1
                return PLACEHOLDER[kind]
            return m.group(0)

        return pattern.sub(repl, text)

    def _phones(self, text: str, hits: Counter) -> str:
        import phonenumbers

        for region in self.phone_regions:
            if not _PHONE_HINT.search(text):
                break
            spans = [
                (m.start, m.end)
                for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
            ]
            for start, end in reversed(spans):
                text = text[:start] + PLACEHOLDER["phone"] + text[end:]
                hits["phone"] += 1
        return text

    def redact(self, text: str) -> Redaction:
        hits: Counter = Counter()
        for kind in self.kinds:
            if kind == "email":
                if "@" in text:
                    text = self._sub(_EMAIL, text, "email", None, hits)
            elif kind == "iban":
                text = self._sub(_IBAN, text, "iban", iban_ok, hits)
            elif kind == "card":
                text = self._sub(_CARD, text, "card", luhn_ok, hits)
            elif kind == "ip":
                if "." in text:
                    text = self._sub(_IPV4, text, "ip", _ip_ok, hits)
                if "::" in text or text.count(":") >= 2:
                    text = self._sub(_IPV6, text, "ip", lambda s: ":" in s and _ip_ok(s), hits)
            elif kind == "phone":
                text = self._phones(text, hits)
        return Redaction(text, hits)
