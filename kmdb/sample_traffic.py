"""The synthetic visitors of a KM site, as the lines of an export in receive order.

People browse anonymously and later sign up, buy, change devices; their aliases
may arrive a file after the events they re-point, and KM writes their text as
it does: octal escapes, lone Windows-1252 bytes, JSON escapes. A few lines are
blank or break a rule of the import contract. Everything comes from one
random.Random, so a seed always gives the same lines.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import re
from base64 import b64encode
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import orjson

# KM exports every 12 hours, so one revision file covers about that much receive time.
EXPORT_SECONDS = 12 * 3600
# The last second the import accepts as a `_t` (9999-12-31 23:59:59 UTC).
MAX_TIME = 253_402_300_799
DAY = 86_400

GOOD, BAD, BLANK = 0, 1, 2

JsonObject = dict[str, Any]  # a line's object before KM encodes it
Line = tuple[int, int, bytes]  # (GOOD/BAD/BLANK, receive time, bytes without newline)


# --- How KM writes text -------------------------------------------------------------------------

_OCTAL = [b"\\%03o" % byte for byte in range(256)]
_HIGH_BYTES = re.compile(rb"[\x80-\xff]+")
_UTF8_CHAR = re.compile(rb"[\xc0-\xf7][\x80-\xbf]+")


def _cp1252_low() -> dict[bytes, bytes]:
    # Characters that Windows-1252 puts in 0x80-0x9F (like ™ at 0x99): written as that one
    # byte they can never be mistaken for UTF-8, which is how `Frigidman\231` reaches KM.
    table = {}
    for byte in range(0x80, 0xA0):
        try:
            table[bytes([byte]).decode("cp1252").encode()] = _OCTAL[byte]
        except UnicodeDecodeError:
            continue
    return table


_CP1252_LOW = _cp1252_low()


def _octal_run(match: re.Match[bytes]) -> bytes:
    return b"".join(_OCTAL[byte] for byte in match[0])


def _json_escape(match: re.Match[bytes]) -> bytes:
    code = ord(match[0].decode())
    if code < 0x10000:
        return b"\\u%04x" % code
    code -= 0x10000
    return b"\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def _cp1252_char(match: re.Match[bytes]) -> bytes:
    return _CP1252_LOW.get(match[0]) or b"".join(_OCTAL[byte] for byte in match[0])


def km_octal(line: bytes) -> bytes:
    """Write every byte 0x80-0xFF of line as KM does: a backslash and three octal digits."""
    return _HIGH_BYTES.sub(_octal_run, line)


def _unicode_escaped(line: bytes) -> bytes:
    return _UTF8_CHAR.sub(_json_escape, line)


def _cp1252_octal(line: bytes) -> bytes:
    return _UTF8_CHAR.sub(_cp1252_char, line)


# --- Identities ---------------------------------------------------------------------------------

FIRST_NAMES = ("john", "mary", "josé", "zoë", "li", "renée", "ahmed", "olga", "bob", "sam", "ana")
LAST_NAMES = ("smith", "garcia", "mueller", "chen", "ivanov", "brown", "oneil", "nguyen", "silva")
DOMAINS = ("example.com", "mail.example.org", "example.net", "corp.example.co.uk")
ACCOUNT_BASE = 10_000


@lru_cache(maxsize=16_384)
def _anon_id(seed: int, person: int, device: int) -> str:
    # KM's cookie ids are a base64 SHA-1 digest in lower case: 28 characters ending in "=".
    digest = hashlib.blake2b(b"%d:%d:%d" % (seed, person, device), digest_size=20).digest()
    return b64encode(digest).decode().lower()


@lru_cache(maxsize=16_384)
def _email(seed: int, person: int) -> str:
    digest = hashlib.blake2b(b"email:%d:%d" % (seed, person), digest_size=3).digest()
    first = FIRST_NAMES[digest[0] % len(FIRST_NAMES)]
    last = LAST_NAMES[digest[1] % len(LAST_NAMES)]
    # The person number keeps emails unique, so two people never merge by accident.
    return f"{first}.{last}{person}@{DOMAINS[digest[2] % len(DOMAINS)]}"


def _account(person: int) -> str:
    return str(ACCOUNT_BASE + person)


# --- Property values ----------------------------------------------------------------------------

URLS = (
    "http://www.example.com/",
    "http://www.example.com/pricing",
    "http://www.example.com/blog/how-we-grew?utm_source=twitter&utm_medium=social",
    "https://shop.example.com/products/widget-42",
    "https://shop.example.com/cart",
    "http://www.example.com/caf%C3%A9-menu",
    "http://www.example.com/signup?plan=gold",
)
REFERRERS = (
    "http://www.google.com/search?q=acme+widgets",
    "https://www.facebook.com/",
    "http://news.ycombinator.com/item?id=4696000",
    "http://t.co/x7Kd93",
    "http://www.bing.com/search?q=widgets",
    "http://www.google.de/search?q=m%C3%BCnchen+widgets",
)
CAMPAIGNS = ("spring sale", "Black Friday 2012", "newsletter-42", "Cyber Monday", "Promo Été 2012")
CITIES = (
    "Boston",
    "London",
    "San Francisco",
    "Café",
    "São Paulo",
    "München",
    "Zürich",
    "Montréal",
    "Kraków",
    "Reykjavík",
    "東京",
    "Москва",
)
COUNTRIES = ("US", "GB", "BR", "DE", "CH", "CA", "PL", "IS", "JP", "RU")
PRODUCTS = (
    "Widget",
    "Gadget Pro",
    "Crème brûlée kit",
    "Acme™ Anvil",
    "Jalapeño sauce",
    "Smørrebrød plate",
    "Über-Widget",
    "Piñata",
)
NICKNAMES = ("Frigidman™", "don’t panic", "€uro fan", "Zoë", "Renée", "jdoe", "“quoted”")
PATHS = ("C:\\Users\\201x", "C:\\Temp\\Café", "\\\\server\\share", "/home/bob")
FEEDBACK = ("love it 😀", "too expensive", "naïve question…", "", "ok")
PLANS = ("free", "trial", "silver", "gold", "platinum")
CATEGORIES = ("tools", "kitchen", "toys", "garden")
DEVICES = ("mobile", "desktop", "tablet")
SCREENS = ({"w": 1280, "h": 800}, {"w": 1920, "h": 1080}, {"w": 320, "h": 480})
API_KEY = "5f4dcc3b5aa765d61d8327deb882cf99"
# A long landing page, so that the import's cut to 255 characters is exercised.
LONG_URL = "http://www.example.com/landing?" + "&".join(f"utm_term{k}=widgets" for k in range(30))
# An order reference beyond 64 bits: orjson reads it as a float, and cannot write it.
BIG_NUMBER = b"123456789012345678901234567890"


# --- The line stream ----------------------------------------------------------------------------

ANONYMOUS, IDENTIFIED, CUSTOMER = 1, 2, 3  # stages of a person; 0 is "not seen yet"
RECENT_PEOPLE = 100  # most lines come from people seen lately, as on a real site


class Traffic:
    """Lines of a KM export in receive order, with the receive time of each."""

    def __init__(
        self,
        rng: random.Random,
        seed: int,
        lines: int,
        lines_per_revision: int,
        bad_every: int,
        start_time: int,
    ) -> None:
        self.rng = rng
        self.seed = seed
        self.people = max(10, lines // 20)
        self.arrival = self.people / lines
        self.stage = bytearray(self.people)
        self.devices = bytearray(self.people)
        # Some visitors were already browsing when the export began, so the first lines
        # are not all about one person.
        self.seen = min(self.people, 20)
        self.count = 0
        self.now = float(start_time)
        self.now_int = start_time
        self.lines_per_revision = lines_per_revision
        self.gap = EXPORT_SECONDS / lines_per_revision
        self.bad_every = bad_every
        self.next_bad = self._bad_countdown()
        self.next_blank = rng.randint(500, 1_500)
        # Aliases KM received late: (due line number, sequence, line), released in due order.
        self.late: list[tuple[int, int, bytes]] = []

    def __iter__(self) -> Iterator[Line]:
        while True:
            yield from self._step()

    def _step(self) -> list[Line]:
        rng = self.rng
        self.now += rng.expovariate(1 / self.gap)
        self.now_int = int(self.now)
        self.count += 1
        if self.late and self.late[0][0] <= self.count:
            return [(GOOD, self.now_int, heapq.heappop(self.late)[2])]
        if self.bad_every:
            self.next_bad -= 1
            if self.next_bad <= 0:
                self.next_bad = self._bad_countdown()
                return [(BAD, self.now_int, self._bad_line())]
        self.next_blank -= 1
        if self.next_blank <= 0:
            self.next_blank = rng.randint(500, 1_500)
            return [(BLANK, self.now_int, rng.choice((b"", b"  ", b"\t")))]
        lines = self._person_lines()
        if rng.random() < 0.003:
            # KM sometimes writes the very same line twice in a row.
            lines.append(lines[-1])
        return [(GOOD, self.now_int, line) for line in lines]

    def _bad_countdown(self) -> int:
        every = self.bad_every
        return self.rng.randint(max(1, every // 2), max(1, every * 3 // 2)) if every else 0

    # People

    def _pick_person(self) -> int:
        rng = self.rng
        if self.seen < self.people and rng.random() < self.arrival:
            self.seen += 1
            return self.seen - 1
        if rng.random() < 0.85:
            back = int(rng.expovariate(1 / RECENT_PEOPLE))
            # Clamping a long draw to the first person would make it everybody's twin.
            if back < self.seen:
                return self.seen - 1 - back
        return rng.randrange(self.seen)

    def _person_lines(self) -> list[bytes]:
        person = self._pick_person()
        stage = self.stage[person]
        if stage == 0:
            self.stage[person] = ANONYMOUS
            return [self._encode(self._visit(self._anon(person)))]
        if stage == ANONYMOUS:
            return self._anonymous_lines(person)
        if stage == IDENTIFIED:
            return self._identified_lines(person)
        return self._customer_lines(person)

    def _anon(self, person: int) -> str:
        return _anon_id(self.seed, person, self.devices[person])

    def _anonymous_lines(self, person: int) -> list[bytes]:
        r = self.rng.random()
        anon = self._anon(person)
        if r < 0.07:
            return self._sign_up(person)
        if r < 0.17:
            return [self._encode(self._property_set(anon))]
        return [self._encode(self._browse(anon))]

    def _identified_lines(self, person: int) -> list[bytes]:
        rng = self.rng
        r = rng.random()
        email = _email(self.seed, person)
        if r < 0.04:
            return self._become_customer(person)
        if r < 0.055:
            return self._new_device(person)
        if r < 0.065:
            return [self._repeat_alias(person)]
        if r < 0.07:
            # An alias of an identity to itself: the import ignores it.
            return [self._encode({"_p": email, "_p2": email, "_t": self._time()})]
        who = email if rng.random() < 0.75 else self._anon(person)
        if r < 0.2:
            return [self._encode(self._property_set(who))]
        if r < 0.3:
            return [self._encode(self._purchase(who))]
        return [self._encode(self._browse(who))]

    def _customer_lines(self, person: int) -> list[bytes]:
        rng = self.rng
        r = rng.random()
        if r < 0.02:
            return self._new_device(person)
        if r < 0.03:
            return [self._numeric_alias(person)]
        s = rng.random()
        if s < 0.5:
            who: str | int = self._account_value(person)
        else:
            who = _email(self.seed, person) if s < 0.8 else self._anon(person)
        if r < 0.2:
            return [self._encode(self._billed(who))]
        if r < 0.3:
            return [self._encode(self._purchase(who))]
        if r < 0.4:
            return [self._encode(self._property_set(who))]
        return [self._encode(self._browse(who))]

    def _account_value(self, person: int) -> str | int:
        # KM passes numeric ids through as JSON integers about half the time.
        account = _account(person)
        return int(account) if self.rng.random() < 0.5 else account

    # Aliases

    def _alias(self, first: str | int, second: str | int, t: int | str | float) -> bytes:
        if self.rng.random() < 0.5:
            first, second = second, first
        return self._encode({"_p": first, "_p2": second, "_t": t})

    def _alias_now_or_later(self, first: str | int, second: str | int) -> list[bytes]:
        line = self._alias(first, second, self._time())
        if self.rng.random() < 0.3:
            # KM received this alias in a later file than the events it links.
            lpr = self.lines_per_revision
            due = self.count + self.rng.randint(lpr // 2 + 1, lpr * 2)
            heapq.heappush(self.late, (due, self.count, line))
            return []
        return [line]

    def _sign_up(self, person: int) -> list[bytes]:
        self.stage[person] = IDENTIFIED
        email = _email(self.seed, person)
        event = self._event("signed up", email, plan=self.rng.choice(PLANS[:2]))
        aliases = self._alias_now_or_later(self._anon(person), email)
        return [self._encode(event), *aliases]

    def _become_customer(self, person: int) -> list[bytes]:
        self.stage[person] = CUSTOMER
        rng = self.rng
        # Usually the email is linked to the account (a chain anon~email~account across files),
        # sometimes the browser's cookie is.
        other = _email(self.seed, person) if rng.random() < 0.8 else self._anon(person)
        account = self._account_value(person)
        event = self._event("billed", account, amount=round(rng.uniform(5, 500), 2))
        return [self._encode(event), *self._alias_now_or_later(other, account)]

    def _new_device(self, person: int) -> list[bytes]:
        if self.devices[person] < 255:
            self.devices[person] += 1
        anon = self._anon(person)
        visit = self._encode(self._visit(anon))
        return [visit, *self._alias_now_or_later(anon, _email(self.seed, person))]

    def _repeat_alias(self, person: int) -> bytes:
        # The same pair again, later: the import keeps the earliest time.
        return self._alias(_anon_id(self.seed, person, 0), _email(self.seed, person), self._time())

    def _numeric_alias(self, person: int) -> bytes:
        # Two real accounts are never merged: the import ignores this alias.
        other = _account(self.rng.randrange(self.people))
        return self._alias(self._account_value(person), other, self._time())

    # Objects of lines

    def _time(self) -> int:
        rng = self.rng
        t = self.now_int - int(rng.expovariate(1 / 30))
        if rng.random() < 0.02:
            # A phone that was offline, or a back-filled import: weeks before it was received.
            t -= rng.randint(7 * DAY, 60 * DAY)
        return max(0, t)

    def _time_value(self, t: int) -> int | str | float:
        r = self.rng.random()
        if r < 0.06:
            return str(t)
        if r < 0.12:
            return t + round(self.rng.random(), 3)
        return t

    def _event(self, name: str, who: str | int, **properties: Any) -> JsonObject:
        record: JsonObject = {"_n": name, "_p": who, "_t": self._time_value(self._time())}
        record.update(properties)
        return record

    def _visit(self, who: str | int) -> JsonObject:
        rng = self.rng
        event = self._event("visited site", who, url=rng.choice(URLS))
        if rng.random() < 0.6:
            event["referrer"] = rng.choice(REFERRERS)
        if rng.random() < 0.2:
            event["campaign name"] = rng.choice(CAMPAIGNS)
        if rng.random() < 0.1:
            event["_c"] = rng.choice(DEVICES)
        if rng.random() < 0.05:
            event["_k"] = API_KEY
            event["_d"] = 1
        if rng.random() < 0.005:
            event["landing page"] = LONG_URL
        return event

    def _browse(self, who: str | int) -> JsonObject:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return self._visit(who)
        product = rng.choice(PRODUCTS)
        price = round(rng.uniform(1, 200), 2)
        if r < 0.85:
            event = self._event("viewed product", who, product=product, price=price)
            event["category"] = rng.choice(CATEGORIES)
            return event
        event = self._event("added to cart", who, product=product, price=price)
        event["quantity"] = rng.randint(1, 5)
        if rng.random() < 0.05:
            event["download path"] = rng.choice(PATHS)
        return event

    def _purchase(self, who: str | int) -> JsonObject:
        rng = self.rng
        items = [f"sku-{rng.randint(1, 99)}" for _ in range(rng.randint(1, 3))]
        event = self._event("purchased", who, revenue=round(rng.uniform(5, 900), 2), items=items)
        event["order id"] = rng.randint(100_000, 999_999)
        event["gift"] = rng.random() < 0.1
        if rng.random() < 0.2:
            event["coupon"] = None
        return event

    def _billed(self, who: str | int) -> JsonObject:
        rng = self.rng
        plan = rng.choice(PLANS[2:])
        event = self._event("billed", who, amount=rng.choice((9.99, 39.99, 99.0)), plan=plan)
        event["currency"] = rng.choice(("USD", "EUR"))
        return event

    def _property_set(self, who: str | int) -> JsonObject:
        rng = self.rng
        record: JsonObject = {"_p": who, "_t": self._time_value(self._time())}
        for key, make in rng.sample(_SET_PROPERTIES, rng.randint(1, 3)):
            record[key] = make(rng)
        return record

    # Encoding

    def _encode(self, record: JsonObject) -> bytes:
        line = orjson.dumps(record)
        if self.rng.random() < 0.001:
            line = line[:-1] + b',"order ref":' + BIG_NUMBER + b"}"
        if line.isascii():
            return line
        r = self.rng.random()
        if r < 0.55:
            return km_octal(line)
        if r < 0.75:
            return line  # raw UTF-8, as some clients send it
        if r < 0.9:
            return _unicode_escaped(line)
        return _cp1252_octal(line)

    def _bad_line(self) -> bytes:
        # Each of these breaks one rule of the import contract, so it must be rejected.
        rng = self.rng
        t = self._time()
        good = self._encode(self._visit(_anon_id(self.seed, rng.randrange(self.people), 0)))
        kind = rng.randrange(14)
        if kind == 0:
            return good[: rng.randrange(1, len(good) - 1)]  # truncated: the object never closes
        bad: list[JsonObject | list[Any] | str] = [
            {"_n": "visited site", "_t": t, "url": URLS[0]},
            {"_n": "visited site", "_p": "x", "_t": "yesterday"},
            {"_n": "visited site", "_p": "x", "_t": -rng.randint(1, 10**6)},
            ["_n", "viewed"],
            {"_n": "", "_p": "x", "_t": t},
            {"_n": "visited site", "_p": "", "_t": t},
            {"_n": 5, "_p": "x", "_t": t},
            {"_n": "visited site", "_p": True, "_t": t},
            {"_n": "visited site", "_p": 1.5, "_t": t},
            {"_p": "x", "_p2": "", "_t": t},
            {"_n": "visited site", "_p": "x", "_t": MAX_TIME + 1},
            "visited site",
        ]
        if kind <= len(bad):
            return orjson.dumps(bad[kind - 1])
        # orjson refuses NaN, so the line is not JSON here.
        return good[:-1] + b',"score":NaN}'


def _screen(rng: random.Random) -> dict[str, int]:
    return dict(rng.choice(SCREENS))


_SET_PROPERTIES: list[tuple[str, Callable[[random.Random], Any]]] = [
    ("plan", lambda rng: rng.choice(PLANS)),
    ("city", lambda rng: rng.choice(CITIES)),
    ("country", lambda rng: rng.choice(COUNTRIES)),
    ("nickname", lambda rng: rng.choice(NICKNAMES)),
    ("campaign name", lambda rng: rng.choice(CAMPAIGNS)),
    ("referrer", lambda rng: rng.choice(REFERRERS)),
    ("screen", _screen),
    ("newsletter", lambda rng: rng.random() < 0.5),
    ("age", lambda rng: rng.randint(18, 80)),
    ("feedback", lambda rng: rng.choice(FEEDBACK)),
    ("tags", lambda rng: rng.sample(("a", "b", 1, 2.5), 2)),
    ("last coupon", lambda rng: None),
]
