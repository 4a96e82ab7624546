"""Mask personal data and secrets in free text before it leaves the model server.

:func:`redact` replaces what it finds with a typed placeholder, so a reader (a person, or a
detector looking for prompt injection or data leaks) still sees *that* something was there
and what kind it was:

=================  ==============================================================================
placeholder        what it replaces
=================  ==============================================================================
``[SECRET]``       ``Bearer``/``Basic`` credentials, ``password=…``-style assignments, long
                   high-entropy tokens, vendor-shaped keys of no known issuer (``sk_test_…``)
``[SECRET:k]``     a credential whose kind the shape names: ``aws_access_key``, ``gcp_api_key``,
                   ``github_token``, ``slack_token``, ``openai_style_key``, ``stripe_key``,
                   ``private_key`` (a key block), ``jwt``
``[EMAIL]``        e-mail addresses
``[CARD]``         payment card numbers (13-19 digits, spaces or dashes allowed) that pass Luhn
``[PHONE]``        ``+`` international numbers, ``(555) 123-4567``-style and ``0…`` national numbers
=================  ==============================================================================

A secret's placeholder also says *which* secret it was, so on-call knows what to rotate
(:func:`secret_placeholder`): a vendor key keeps what its issuer's console shows of it, the first
and last characters (:func:`mask`: ``[SECRET:aws_access_key:AKIA…4VYD]``); a private key, a
signed JWT and a generic secret of 32+ random token characters get a fingerprint, ``#`` and the
first 8 hex digits of SHA-256 of the secret (:func:`fingerprint`: ``[SECRET:private_key:#1a2b3c4d]``,
``[SECRET:#0c5e8f21]``), which ``inferwatch pseudonym --fingerprint`` computes from a candidate.
``Basic`` credentials, ``password=`` values and anything shorter or less random stay ``[SECRET]``:
a short hash of a guessable value would confirm a guess. ``redact(text, identify=False)`` (capture
``none``) writes the placeholders without either.

Everything else is left alone on purpose: years, prices, dates, versions, IP addresses,
ordinary words and instructions ("ignore previous instructions…") reach the detectors as they
were. A run of digits becomes ``[CARD]`` only when it passes the Luhn check, and ``[PHONE]``
only with a phone-like shape (a leading ``+``, a leading ``0`` or ``(area)``/``555-123-4567``
grouping), never a bare digit run. Long hex strings of 32+ characters (hashes, many vendors'
API keys) count as secrets: for a log that may leave the host, over-masking a hash is the
cheaper mistake. A long Base64 or hex token that decodes to readable text of four words or more
is an encoded prompt, not a credential: it is redacted inside its encoding (decoded, redacted,
encoded back), so the detectors can still decode an encoded injection.

Patterns are compiled once; the ones that cannot match are skipped after a cheap substring
check, so a typical prompt costs well under a millisecond. This module is pure standard
library so the agent and the detectors can share it.

>>> redact("mail bob@example.com or call +44 20 7946 0958, key sk-abcdefghijklmnop1234567890")
'mail [EMAIL] or call [PHONE], key [SECRET:openai_style_key:sk-a…7890]'
>>> redact("In 2024 it cost $1,299.99 for 3 seats; card 4111 1111 1111 1112 is not valid")
'In 2024 it cost $1,299.99 for 3 seats; card 4111 1111 1111 1112 is not valid'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from inferwatch.collectors.settings import CaptureMode

EMAIL: Final = "[EMAIL]"
PHONE: Final = "[PHONE]"
CARD: Final = "[CARD]"
SECRET: Final = "[SECRET]"
# Credentials whose issuer the shape names; redaction writes ``[SECRET:<kind>]`` for them, so a
# reader downstream (the output_leak detector, a person) still knows a cloud key was there.
VENDOR_KINDS: Final = (
    (("AKIA", "ASIA"), "aws_access_key"),  # other AWS prefixes (AIDA, AROA…) name, not unlock
    (("AIza",), "gcp_api_key"),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), "github_token"),
    (("xox",), "slack_token"),
    (("sk-",), "openai_style_key"),
    (("sk_live_", "rk_live_"), "stripe_key"),  # sk_test_ keys fill public docs and code samples
)
_VENDOR_KIND_NAMES: Final = frozenset(kind for _, kind in VENDOR_KINDS)
SECRET_KINDS: Final = _VENDOR_KIND_NAMES | {"private_key", "jwt"}
"""The kinds a typed ``[SECRET:<kind>]`` placeholder may name."""


def vendor_kind(value: str) -> str | None:
    """The issuer-named kind of a vendor key (``aws_access_key``, ``github_token``...), if any.

    >>> vendor_kind("AKIAZ3MXQ7R2LPWN4VYD"), vendor_kind("sk_test_4eC39HqLyjWDarjtT1zdp7dc")
    ('aws_access_key', None)
    """
    for prefixes, kind in VENDOR_KINDS:
        if value.startswith(prefixes):
            return kind
    return None


def jwt_valid(token: str) -> bool:
    """Whether ``token``'s first part decodes to a JSON object naming an ``alg``, as a JWT's does."""
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def mask(value: str) -> str:
    """Keep at most a fifth of ``value`` (up to 4 characters) at each end; nothing when short.

    The one way a secret or personal datum is shown in part: in redaction placeholders, in the
    output_leak detector's evidence and in ``inferwatch scan``'s table.

    >>> mask("AKIAZ3MXQ7R2LPWN4VYD"), mask("123-45-6789"), mask("short")
    ('AKIA…4VYD', '12…89', '…')
    """
    keep = min(4, len(value) // 5) if len(value) >= 10 else 0
    return f"{value[:keep]}…{value[-keep:]}" if keep else "…"


FINGERPRINT_HEX: Final = 8
"""Hex digits of SHA-256 in a secret's fingerprint (32 bits: names a secret, cannot recover one)."""
_KEY_BODY: Final = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----([\s\S]*?)(?:-----END|\Z)")
_MIN_FINGERPRINTED: Final = 32  # shorter or less random secrets could be guessed from their hash


def fingerprint(secret: str) -> str:
    """``#`` and the first 8 hex digits of SHA-256 of ``secret`` (UTF-8); of a private key block,
    of its Base64 body with all whitespace dropped, so line endings and wrapping do not matter.

    >>> fingerprint("AKIAZ3MXQ7R2LPWN4VYD")
    '#99752938'
    """
    body = _KEY_BODY.search(secret)
    if body is not None:
        secret = "".join(body.group(1).split())
    return "#" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX]


def identification(kind: str | None, secret: str) -> str | None:
    """What a placeholder may say of ``secret`` to tell it from others of its ``kind``, or ``None``.

    A vendor key: :func:`mask` of it (the vendor prefix and the last 4 characters). A private key
    with a body of 32+ characters, a JWT with a signature and a generic secret of 32+ token
    characters that passes :func:`is_high_entropy` and does not decode to readable text:
    :func:`fingerprint`. Anything else (a short token, the Base64 of ``user:password``) nothing:
    a short hash of a guessable value would let anyone holding the log confirm a guess.

    >>> identification("github_token", "ghp_" + "a1B2" * 9), identification(None, "hunter2hunter2")
    ('ghp_…a1B2', None)
    """
    if kind in _VENDOR_KIND_NAMES:
        return mask(secret)
    if kind == "private_key":
        body = _KEY_BODY.search(secret)
        long_enough = body is not None and len("".join(body.group(1).split())) >= _MIN_FINGERPRINTED
        return fingerprint(secret) if long_enough else None
    if kind == "jwt":
        return fingerprint(secret) if len(secret.rpartition(".")[2]) >= 16 else None
    if (len(secret) >= _MIN_FINGERPRINTED and _TOKEN_SET.issuperset(secret) and is_high_entropy(secret)
            and _decoded(secret) is None):  # Base64 of readable text ("user:password"): guessable
        return fingerprint(secret)
    return None


def secret_placeholder(kind: str | None, secret: str | None = None) -> str:
    """``[SECRET:<kind>]`` for a kind of :data:`SECRET_KINDS`, else ``[SECRET]``; given the
    ``secret``, with its :func:`identification` after a colon when it has one.

    >>> secret_placeholder("aws_access_key", "AKIAZ3MXQ7R2LPWN4VYD")
    '[SECRET:aws_access_key:AKIA…4VYD]'
    >>> secret_placeholder(None, "q8Zr2Lp0Xv7Nw4Kt9Bs6Hd3Jm1Fc5Gy8"), secret_placeholder("jwt")
    ('[SECRET:#7fbda3c5]', '[SECRET:jwt]')
    """
    known = kind if kind in SECRET_KINDS else None
    ident = identification(known, secret) if secret is not None else None
    return "[" + ":".join(part for part in ("SECRET", known, ident) if part) + "]"


_KIND_PATTERN: Final = "|".join(sorted(SECRET_KINDS))
_IDENT_PATTERN: Final = rf"#[0-9a-f]{{{FINGERPRINT_HEX}}}|[A-Za-z0-9_-]{{0,4}}…[A-Za-z0-9_-]{{0,4}}"
_PLACEHOLDER_PATTERN: Final = rf"\[SECRET(?::(?:{_KIND_PATTERN}))?(?::(?:{_IDENT_PATTERN}))?\]"
SECRET_PLACEHOLDER: Final = re.compile(
    rf"\[SECRET(?::(?P<kind>{_KIND_PATTERN}))?(?::(?P<ident>{_IDENT_PATTERN}))?\]")
"""A secret's placeholder as :func:`secret_placeholder` writes it (groups ``kind``, ``ident``).

>>> SECRET_PLACEHOLDER.fullmatch("[SECRET:private_key:#1a2b3c4d]").group("kind", "ident")
('private_key', '#1a2b3c4d')
"""
_IDENTIFIED: Final = re.compile(rf"(\[SECRET(?::(?:{_KIND_PATTERN}))?):(?:{_IDENT_PATTERN})\]")

_TOKEN_CHARS = r"A-Za-z0-9+/=_-"
_TOKEN_SET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")
_ASSIGNMENT_NAMES = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "auth_token",
    "auth-token",
    "access_token",
    "access-token",
    "client_secret",
)
_PASSWORD_NAMES: Final = frozenset({"password", "passwd", "pwd", "secret"})
_VENDOR_PREFIXES = (
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AGPA",
    "AIDA",
    "AIPA",
    "ANPA",
    "ANVA",
    "AROA",
    "APKA",
    "ASCA",
    "sk-",
    "sk_",
    "rk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "AIza",
)

# Each pass is (cheap pre-check on the text and its longest word, pattern). Patterns that
# start with a literal are nearly free (the regex engine skips ahead to the literal); patterns
# that start with a character class cost ~25 ns a character, so they run only when a check
# made of C-speed string methods (``in``, ``count``, ``split``) says they can match.
# Passes run in order: secrets first, so a key that contains digits never becomes a [PHONE].
_PASSES: Final[list[tuple[Callable[[str, int], bool], re.Pattern[str]]]] = [
    (
        lambda t, _longest: "-----BEGIN" in t,
        re.compile(
            r"(?P<private_key>-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----"
            r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s]*))"
        ),
    ),
    (
        lambda t, longest: longest >= 24 and "eyJ" in t,
        re.compile(r"(?P<jwt>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"),
    ),
    (
        lambda t, longest: longest >= 14 and any(prefix in t for prefix in _VENDOR_PREFIXES),
        re.compile(
            r"(?P<vendor_key>(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}"
            r"|sk-[A-Za-z0-9_-]{20,}"
            r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"
            r"|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|github_pat_[A-Za-z0-9_]{40,}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,}"
            r"|AIza[A-Za-z0-9_-]{35})(?![A-Za-z0-9_-])"
        ),
    ),
    (
        lambda t, _longest: "earer" in t or "Basic" in t,
        re.compile(r"(?P<auth>(?P<scheme>[Bb]earer|Basic)\s+(?P<credential>[A-Za-z0-9._~+/-]{8,}=*))"),
    ),
    (
        lambda t, _longest: ("=" in t or ":" in t) and any(name in t.lower() for name in _ASSIGNMENT_NAMES),
        re.compile(
            # A placeholder already written is matched whole and left as it is, so the names inside
            # one ("[SECRET:aws_access_key:AKIA…]", "gcp_api_key:") are never read as assignments.
            rf"(?P<placed>{_PLACEHOLDER_PATTERN})"
            r"|(?P<assignment>(?<!\[)(?P<name>(?i:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token"
            r"|access[_-]?token|client[_-]?secret))"
            r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'`,;]{6,}))"
        ),
    ),
    (
        lambda t, _longest: "@" in t,
        re.compile(r"(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)"),
    ),
    (
        lambda t, _longest: sum(map(t.count, "0123456789")) >= 7,  # no card or phone has fewer
        re.compile(
            # The look-ahead first lets the engine skip to a digit, "+" or "(" before trying more.
            r"(?=[0-9+(])(?<![\w.,+-])(?:"
            # Contiguous 13-19 digits, or the printed groupings (4-4-4-4[-3], Amex 4-6-5, Diners
            # 4-6-4); groups of three are thousands separators ("10 000 000 000 000"), not cards.
            r"(?P<card>\d{13,19}|\d{4}(?P<csep>[ .-])\d{4}(?P=csep)\d{4}(?P=csep)\d{4}(?:(?P=csep)\d{3})?"
            r"|\d{4}[ -]\d{6}[ -]\d{4,5})"
            r"|(?P<phone>\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # +44 20 7946 0958, +1 (555) 123-4567
            r"|\(\d{3}\)\s?\d{3}[ .-]\d{4}"  # (555) 123-4567
            r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
            r"|0[1-9]\d{1,3}[ -]?\d{3,4}[ -]?\d{3,4})"  # 020 7946 0958, 07700 900123
            r")(?![\w-]|[.,]\d)"
        ),
    ),
    (
        lambda t, longest: longest >= 32,
        re.compile(rf"(?<![{_TOKEN_CHARS}])(?P<token>[{_TOKEN_CHARS}]{{32,}})"),
    ),
]
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX: Final = re.compile(r"^[0-9a-fA-F]+$")
# Bits per character: random base64 of 32+ chars sits near 4.6-5, English-like identifiers
# ("state_of_the_art_model_2024_final") near 3.5-4; random hex tops out at 4 bits.
_MIN_ENTROPY: Final = 4.2
_MIN_HEX_ENTROPY: Final = 3.0


def redact(text: str, *, identify: bool = True) -> str:
    """Return ``text`` with e-mails, phone numbers, card numbers and secrets masked.

    A secret's placeholder says which secret it was (:func:`secret_placeholder`); with
    ``identify=False`` it names the kind alone, as under capture ``none``. Placeholders already
    in ``text`` are left as they are: redacting redacted text changes nothing.

    >>> redact("Authorization: Bearer abcDEF123456ghiJKL789")
    'Authorization: Bearer [SECRET]'
    >>> redact("key AKIAZ3MXQ7R2LPWN4VYD"), redact("key AKIAZ3MXQ7R2LPWN4VYD", identify=False)
    ('key [SECRET:aws_access_key:AKIA…4VYD]', 'key [SECRET:aws_access_key]')
    """
    if len(text) < 6:  # nothing maskable fits: skip the scans for tiny strings
        return text
    # Every secret shape is one long run without spaces: the longest word rules most passes out.
    longest = max(map(len, text.split()), default=0)
    for precheck, pattern in _PASSES:
        if precheck(text, longest):
            text = pattern.sub(_replace, text)
    if not identify and "[SECRET:" in text:
        text = _IDENTIFIED.sub(r"\1]", text)
    return text


@dataclass(frozen=True)
class SensitiveSpan:
    """Something :func:`redact` would mask: its pattern ``kind``, ``placeholder`` and position.

    ``kind`` is the pattern that found it (``private_key``, ``jwt``, ``vendor_key``, ``auth``,
    ``assignment``, ``email``, ``card``, ``phone``, ``token``); for ``auth`` and ``assignment``
    the span covers only the credential, as redaction does.
    """

    kind: str
    placeholder: str
    start: int
    end: int


_PLACEHOLDER_OF: Final = {"email": EMAIL, "card": CARD, "phone": PHONE}
_VALUE_GROUP: Final = {"auth": "credential", "assignment": "value"}
_TYPED: Final = frozenset({"vendor_key", "private_key", "jwt"})  # masked whole, as a typed placeholder
# A value that is already a placeholder ("api_key: [SECRET:aws_access_key:AKIA…4VYD]"), of a
# known kind and identification only, so nothing else can pass for one.
_PLACED: Final = re.compile(_PLACEHOLDER_PATTERN + r"[.!?)\]}]*")


def find_sensitive(text: str) -> list[SensitiveSpan]:
    """Where :func:`redact` would mask ``text``, with the same patterns and checks, in text order.

    Passes run in redaction's order and a match overlapping an earlier one is skipped, so a key
    with digits inside is one ``vendor_key``, never also a ``phone``. For detectors that need to
    know *what* was there (for example sensitive data in model outputs) rather than mask it.

    >>> [(s.kind, s.placeholder) for s in find_sensitive("mail bob@example.com, pay 4111 1111 1111 1111")]
    [('email', '[EMAIL]'), ('card', '[CARD]')]
    """
    if len(text) < 6:
        return []
    longest = max(map(len, text.split()), default=0)
    taken: list[tuple[int, int]] = []
    found: list[SensitiveSpan] = []
    for precheck, pattern in _PASSES:
        if not precheck(text, longest):
            continue
        for match in pattern.finditer(text):
            if _replace(match) == match.group(0):  # the pass's own check says: not sensitive
                continue
            kind = match.lastgroup or ""
            start, end = match.span(_VALUE_GROUP.get(kind, 0))
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            placeholder = _PLACEHOLDER_OF.get(kind) or _span_placeholder(match, kind)
            found.append(SensitiveSpan(kind, placeholder, start, end))
    return sorted(found, key=lambda s: s.start)


def _span_placeholder(match: re.Match[str], kind: str) -> str:
    """The secret placeholder :func:`redact` writes for ``match``'s sensitive part."""
    if kind in _TYPED:
        return _replace(match)
    if kind == "auth":
        return _auth_placeholder(match)
    if kind == "assignment":
        return _assignment_placeholder(match)
    replaced = _replace(match)  # a token: masked, or an encoded text redacted inside (masked here)
    return replaced if SECRET_PLACEHOLDER.fullmatch(replaced) else SECRET


def _replace(match: re.Match[str]) -> str:
    handler = _HANDLERS.get(match.lastgroup or "")
    return handler(match) if handler is not None else match.group(0)


def _inside_word(match: re.Match[str]) -> bool:
    start = match.start()
    return start > 0 and (match.string[start - 1].isalnum() or match.string[start - 1] in "_-")


# Credentials published as examples, printed by every coding assistant that explains an API:
# AWS's documentation keys (AKIAIOSFODNN7EXAMPLE, wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY: a key's
# shape ending in "EXAMPLE" or "EXAMPLEKEY", which a random key all but never does; a password
# that merely contains the word is still masked) and jwt.io's sample token
# (its claims: sub 1234567890, name John Doe, iat 1516239022).
SAMPLE_JWT_CLAIMS: Final = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"


_SAMPLE_AWS: Final = re.compile(
    r"(?<![A-Za-z0-9/+])(?:A[KS]IA[0-9A-Z]{9}EXAMPLE|[A-Za-z0-9/+]{30}EXAMPLEKEY)(?![A-Za-z0-9/+])")


def public_sample(value: str) -> bool:
    """Whether ``value`` is a credential published as an example (see above): not a secret.

    >>> public_sample("AKIAIOSFODNN7EXAMPLE"), public_sample("AKIAZ3MXQ7R2LPWN4VYD")
    (True, False)
    """
    return _SAMPLE_AWS.search(value) is not None or f".{SAMPLE_JWT_CLAIMS}." in value


def _key(match: re.Match[str]) -> str:
    # "task-management-system-for-teams" contains "sk-" + 20 chars: a real key starts a word
    # and, being random, has digits or mixed case.
    if _inside_word(match) or not _looks_random(match.group(0)[4:]) or public_sample(match.group(0)):
        return match.group(0)
    return secret_placeholder(vendor_kind(match.group(0)), match.group(0))


def _looks_random(credential: str) -> bool:
    has_digit = any(c.isdigit() for c in credential)
    mixed_case = any(c.isupper() for c in credential[1:]) and any(c.islower() for c in credential)
    return has_digit or mixed_case


def _auth(match: re.Match[str]) -> str:
    if _inside_word(match) or not _looks_random(match.group("credential")) or public_sample(
            match.group("credential")):
        return match.group(0)  # "Bearer instructions": a word, not a credential
    return f"{match.group('scheme')} {_auth_placeholder(match)}"


def _auth_placeholder(match: re.Match[str]) -> str:
    # Basic is Base64 of user:password: whatever its length, a guessable value, never fingerprinted.
    return SECRET if match.group("scheme") == "Basic" else secret_placeholder(None, match.group("credential"))


# A value that says where the secret is or that it was left out, not the secret: an environment
# variable ("$DB_PASSWORD", "${API_KEY}"), code that reads one ("os.environ[", "getpass()",
# "config.get("), a mask ("********", "xxxx", "..."), a template ("<your-password>",
# "{{ api_key }}") or a fill-me-in ("YOUR_API_KEY", "sk_test_YOUR_KEY_HERE", "replace-me").
# Code and docs are full of these.
_NOT_A_VALUE: Final = re.compile(
    r"\$\{?[A-Z_][A-Z0-9_]*\}?[.!?)\]}]*"
    r"|(?:os\.environ|os\.getenv|getenv|process\.env|ENV|env|getpass|config|settings|secrets|vault|keyring"
    r"|input|prompt)[.\[(].*"
    r"|\*{3,}|[xX]{4,}|\.{3,}|…+|<[A-Za-z_-]*>?|\{\{?[A-Za-z_.]*\}?\}?"
    # Letters only after the word: "Your-Secret-99" is someone's password, masked.
    r"|[\w-]*?(?:YOUR|your)[_-][A-Za-z_-]*|[\w-]*?(?i:replace[_-]?me|change[_-]?me|placeholder)[A-Za-z_-]*"
    r"|[\w-]*?[_-](?:HERE|here)"
)


def _assignment(match: re.Match[str]) -> str:
    # "password: please." is prose; a real value has digits or symbols inside it. A placeholder
    # already written ("[SECRET:jwt]", "api_key: [SECRET:...]") is left as it is.
    value = match.group("value")
    if (value.rstrip(".!?)]}").isalpha() or _PLACED.fullmatch(value) or _NOT_A_VALUE.fullmatch(value)
            or public_sample(value)):
        return match.group(0)
    return f"{match.group('name')}{match.group('sep')}{_assignment_placeholder(match)}"


def _assignment_placeholder(match: re.Match[str]) -> str:
    # A password is chosen by a person, however long: never fingerprinted. A key or token is not.
    if match.group("name").lower() in _PASSWORD_NAMES:
        return SECRET
    return secret_placeholder(None, match.group("value"))


def _card(match: re.Match[str]) -> str:
    digits = [int(c) for c in match.group(0) if c.isdigit()]
    if luhn_valid(digits):
        return CARD
    # 4-4-4-4 then three more: a 19-digit card, or a 16-digit one followed by its security code
    # ("4111 1111 1111 1111 123"), masked with it: the pattern does not step back from the group.
    if match.group("csep") and len(digits) == 19 and luhn_valid(digits[:16]):
        return CARD
    return match.group(0)


def _phone(match: re.Match[str]) -> str:
    number = match.group(0)
    count = sum(c.isdigit() for c in number)
    if number.isdigit() and count < 10:  # "012345678" is a padded id, not a national number
        return number
    return PHONE if 7 <= count <= 15 else number


# Random-looking but public: an SSH public key's body, a Subresource Integrity digest
# ("sha512-…", npm's lock files), an image's bytes in a data URI. Masking them hid nothing and
# made every coding answer that shows one look like a leaked secret.
_PUBLIC_BEFORE: Final = re.compile(
    r"(?:\b(?:ssh-(?:rsa|ed25519|dss)|ecdsa-sha2-nistp(?:256|384|521)) |\bdata:image/[\w.+-]+;base64,)$")
_PUBLIC_PREFIXES: Final = ("sha256-", "sha384-", "sha512-")


def public_blob(text: str, start: int, token: str) -> bool:
    """Whether ``token``, at ``start`` in ``text``, is random-looking but public (see above).

    >>> public_blob("ssh-ed25519 AAAAC3Nza", 12, "AAAAC3Nza"), public_blob("key AAAAC3Nza", 4, "AAAAC3Nza")
    (True, False)
    """
    if token.startswith(_PUBLIC_PREFIXES):
        return True
    return _PUBLIC_BEFORE.search(text, max(0, start - 40), start) is not None


def _token(match: re.Match[str]) -> str:
    token = match.group(0)
    if not is_high_entropy(token) or public_blob(match.string, match.start(), token) or public_sample(
            token) or public_sample(_word_around(match)):
        return token
    encoded = None if _wrapped(match) else _encoded_text(token)
    return secret_placeholder(None, token) if encoded is None else encoded


def _word_around(match: re.Match[str]) -> str:
    """The whitespace-delimited word ``match`` lies in (a JWT's part: the whole token)."""
    text, start, end = match.string, match.start(), match.end()
    while start > 0 and not text[start - 1].isspace() and match.start() - start < 2048:
        start -= 1
    while end < len(text) and not text[end].isspace() and end - match.end() < 2048:
        end += 1
    return text[start:end]


def _jwt(match: re.Match[str]) -> str:
    if _inside_word(match) or public_sample(match.group(0)):
        return match.group(0)
    return secret_placeholder("jwt" if jwt_valid(match.group(0)) else None, match.group(0))


def _wrapped(match: re.Match[str]) -> bool:
    """Whether the token is one line of an encoding wrapped over several (``base64`` at 76
    columns, PEM at 64): a line decodes to a fragment, and what straddles a break would escape
    redaction, so such a block is masked whole."""
    text, start, end = match.string, match.start(), match.end()
    after = text[end:end + 3].lstrip("\r")
    before = text[max(0, start - 3):start].rstrip("\r")
    return (after[:1] == "\n" and after[1:2] != "" and after[1] in _TOKEN_SET) or (
        before[-1:] == "\n" and len(before) >= 2 and before[-2] in _TOKEN_SET)


def _encoded_text(token: str) -> str | None:
    """``token`` redacted inside its encoding when it is Base64 or hex of readable text (several
    words of printable UTF-8), else ``None`` (a credential: random bytes never read so).

    Encoding a prompt is a known way to slip an injection past filters; masking it whole would
    hide it from the detectors, which decode such tokens. What the text holds is redacted like any
    other text and encoded back the same way, so no e-mail or key leaves inside it either.
    """
    decoded = _decoded(token)
    if decoded is None or decoded[0].count(" ") < 3:
        return None
    text, encode = decoded
    inner = redact(text)
    return token if inner == text else encode(inner.encode("utf-8"))


def _decoded(token: str) -> tuple[str, Callable[[bytes], str]] | None:
    """The text ``token`` encodes in hex or Base64 when it is printable UTF-8, with the way to
    encode text back alike; ``None`` for anything else (random bytes, not an encoding)."""
    encode: Callable[[bytes], str]
    if len(token) % 2 == 0 and _HEX.match(token):
        data, encode = bytes.fromhex(token), bytes.hex
    else:
        urlsafe = "-" in token or "_" in token
        raw = token.rstrip("=")
        try:
            data = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_" if urlsafe else None,
                                    validate=True)
        except (binascii.Error, ValueError):
            return None
        padded = token.endswith("=")

        def encode(value: bytes) -> str:
            out = base64.b64encode(value, altchars=b"-_" if urlsafe else None).decode("ascii")
            return out if padded else out.rstrip("=")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if sum(c.isprintable() or c.isspace() for c in text) < 0.95 * len(text):
        return None
    return text, encode


_HANDLERS: Final[dict[str, Callable[[re.Match[str]], str]]] = {
    "private_key": lambda m: secret_placeholder("private_key", m.group(0)),
    "placed": lambda m: m.group(0),
    "jwt": _jwt,
    "vendor_key": _key,
    "auth": _auth,
    "assignment": _assignment,
    "email": lambda _m: EMAIL,
    "card": _card,
    "phone": _phone,
    "token": _token,
}


def luhn_valid(digits: list[int]) -> bool:
    """Whether a digit sequence passes the Luhn checksum used by payment cards.

    >>> luhn_valid([int(c) for c in "4111111111111111"])
    True
    """
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return len(digits) >= 13 and total % 10 == 0


def is_high_entropy(token: str) -> bool:
    """Whether ``token`` (32+ chars) looks like a random credential rather than words or an id.

    >>> is_high_entropy("q8Zr2Lp0Xv7Nw4Kt9Bs6Hd3Jm1Fc5Gy8")
    True
    >>> is_high_entropy("state_of_the_art_transformer_model_2024")
    False
    """
    if _UUID.match(token) or not any(c.isdigit() for c in token) or not any(c.isalpha() for c in token):
        return False
    threshold = _MIN_HEX_ENTROPY if _HEX.match(token) else _MIN_ENTROPY
    return shannon_entropy(token) >= threshold


def shannon_entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character (0 for an empty string)."""
    if not text:
        return 0.0
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in Counter(text).values())


MAX_TEXT_CHARS: Final = 32_768
"""Longest prompt or completion text an event keeps (``chars`` still counts all of it)."""
# Redacting a little past the cut keeps a secret that straddles it from surviving half-masked.
_REDACT_OVERLAP: Final = 512


def capture_text(text: str | None, mode: CaptureMode) -> str | None:
    """The text to keep under ``mode``: ``None``, redacted, or as is (cut to the limit).

    The one capture rule of the agent, the proxy and the OTLP receiver.

    >>> capture_text("mail bob@example.com", CaptureMode.REDACTED)
    'mail [EMAIL]'
    >>> capture_text("mail bob@example.com", CaptureMode.NONE) is None
    True
    """
    if text is None or mode is CaptureMode.NONE:
        return None
    if mode is CaptureMode.FULL:
        return text[:MAX_TEXT_CHARS]
    return redact_cut(text, MAX_TEXT_CHARS)


@lru_cache(maxsize=4096)
def redact_path(path: str) -> str:
    """A request path as it may leave the host, whatever the capture mode: e-mail addresses,
    card numbers, phone numbers and secrets in it masked, the secrets by kind alone.

    A path is not content, but APIs put identifiers in it (``/tenants/bob@example.org/…``, a key
    in ``/hooks/<token>``), and it is recorded as the event's ``endpoint`` (and the span's
    ``url.path``). Paths repeat, so the answers are cached.

    >>> redact_path("/v1/tenants/bob.victim@example.org/v1/chat/completions")
    '/v1/tenants/[EMAIL]/v1/chat/completions'
    >>> redact_path("/hooks/AKIAZ3MXQ7R2LPWN4VYD/run"), redact_path("/v1/orders/20260101123/items")
    ('/hooks/[SECRET:aws_access_key]/run', '/v1/orders/20260101123/items')
    """
    return redact(path, identify=False)


def redact_cut(text: str, limit: int) -> str:
    """:func:`redact` of ``text`` cut to at most ``limit`` characters, with nothing sensitive cut
    in half at the limit: a secret across it is kept whole (then masked) or left out.

    Redacting first and cutting after would keep the raw text just past the limit whenever
    masks shortened what came before it (an e-mail becomes ``[EMAIL]``), the end of a card
    number included; cutting first and redacting after leaves the first digits of one.

    >>> redact_cut("contact me at bob@example.com", 20)
    'contact me at [EMAIL'
    >>> redact_cut("card 4111 1111 1111 1111 is mine", 12)
    'card [CARD]'
    """
    if len(text) <= limit:
        return redact(text)[:limit]
    window = text[: limit + _REDACT_OVERLAP]
    spans = find_sensitive(window)
    cut = limit
    for span in spans:
        if span.start < cut < span.end:
            # Whole when the window holds all of it (masked below), else left out.
            whole = span.end < len(window) or len(window) == len(text)
            cut = span.end if whole else span.start
            break
    # Masked from the window's own spans, not by running the patterns again on the cut text:
    # cut short, a pattern can match differently ("…1111 2024" cut after "202" reads as a
    # 19-digit number that fails the card check) and leave what the whole text masks.
    parts: list[str] = []
    pos = 0
    for span in spans:
        if span.end > cut:
            break
        parts += (window[pos:span.start], span.placeholder)
        pos = span.end
    parts.append(window[pos:cut])
    return "".join(parts)[:limit]
