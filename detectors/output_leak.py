"""Sensitive data in model outputs that the caller did not already have, per request.

Four families are looked for in ``output.text``:

* ``secrets``: AWS access key ids (``AKIA``/``ASIA``), Google API keys (``AIza``), GitHub,
  Slack, OpenAI-style (``sk-``) and live Stripe tokens, private key blocks, JWTs (the header
  must decode to JSON with ``alg``) and other high-entropy tokens (20+ characters mixing upper
  case, lower case and digits, few dictionary-like runs, Shannon entropy over a threshold);
* ``pii``: e-mail addresses, phone numbers, payment cards (Luhn), IBANs (mod-97), US social
  security numbers (valid areas only) and UK National Insurance numbers;
* ``prompt_leak``: configured ``canaries`` anywhere in the output, and word 8-grams of the
  configured ``system_prompt`` repeated in the output;
* ``exfiltration``: markdown images (and ``<img>`` tags) on remote hosts whose URL carries a
  query string or a long path, and markdown links whose URL carries data-looking values.

A match counts only when it is absent from ``input.text`` (the caller already had it). With the
agent's default ``redacted`` capture the values arrive as ``[SECRET]``, ``[EMAIL]``, ``[CARD]``
and ``[PHONE]``, and keys whose kind the shape names as ``[SECRET:aws_access_key]``,
``[SECRET:private_key]``..., a secret's placeholder naming which one it was
(``[SECRET:aws_access_key:AKIA…4VYD]``, ``[SECRET:private_key:#1a2b3c4d]``): placeholders are
counted too, when the output holds more of the same placeholder than the input, a typed one with
its kind's weight (a cloud key redacted at the edge is as high as the key itself), and the
evidence shows the placeholder, so it names the key. Canaries count even when the caller sent
them. Secret, e-mail, card and phone shapes are those of :mod:`inferwatch.collectors.redaction`,
so the agent and this detector agree on them.

Evidence never holds a raw value: snippets are masked to a short prefix and suffix.

>>> from inferwatch.testing import make_event
>>> from inferwatch.collectors.event import EventOutput
>>> ev = make_event(0.0, text="my keys?", output=EventOutput(text="Use AKIAZ3MXQ7R2LPWN4VYD"))
>>> f, = OutputLeakDetector().observe(ev)
>>> f.severity, f.evidence["kinds"], f.evidence["snippets"][0]["masked"]
('high', {'aws_access_key': 1}, 'AKIA…4VYD')
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from inferwatch.collectors.event import InferenceEvent
from inferwatch.collectors.redaction import (
    CARD,
    EMAIL,
    PHONE,
    SAMPLE_JWT_CLAIMS,
    SECRET_PLACEHOLDER,
    find_sensitive,
    jwt_valid,
    mask,
    public_blob,
    public_sample,
    shannon_entropy,
    vendor_kind,
)
from inferwatch.detectors.base import SEVERITY_ORDER, Finding, Severity
from inferwatch.detectors.state import RepeatGate, about_event, subject_of

MAX_SNIPPETS: Final = 10
NGRAM: Final = 8

# kind -> (family, severity, weight); weights combine as 1 - prod(1 - w).
KINDS: Final[dict[str, tuple[str, Severity, float]]] = {
    "canary": ("prompt_leak", "critical", 1.0),
    "system_prompt": ("prompt_leak", "high", 0.8),
    "private_key": ("secrets", "critical", 0.95),
    "aws_access_key": ("secrets", "high", 0.9),
    "gcp_api_key": ("secrets", "high", 0.9),
    "github_token": ("secrets", "high", 0.85),
    "slack_token": ("secrets", "high", 0.85),
    "openai_style_key": ("secrets", "high", 0.85),
    "stripe_key": ("secrets", "high", 0.85),
    "jwt": ("secrets", "high", 0.7),
    "high_entropy_token": ("secrets", "medium", 0.4),
    "secret": ("secrets", "medium", 0.5),  # a [SECRET] placeholder: some secret, kind unknown
    "card": ("pii", "medium", 0.6),
    "iban": ("pii", "medium", 0.5),
    "us_ssn": ("pii", "medium", 0.6),
    "uk_ni_number": ("pii", "medium", 0.5),
    "email": ("pii", "medium", 0.4),
    "phone": ("pii", "medium", 0.3),
    "markdown_image": ("exfiltration", "high", 0.8),
    "markdown_link": ("exfiltration", "high", 0.7),
    "remote_image": ("exfiltration", "medium", 0.4),  # query or long path, nothing data-looking
}
_PLACEHOLDER_KIND: Final = {EMAIL: "email", CARD: "card", PHONE: "phone"}
# "[SECRET:aws_access_key:AKIA…4VYD]": the key's kind, and which key; "[SECRET]": some secret
_PLACEHOLDERS: Final = re.compile(
    "|".join(re.escape(p) for p in _PLACEHOLDER_KIND) + "|" + SECRET_PLACEHOLDER.pattern)
_IBAN: Final = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_SSN: Final = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_UK_NI: Final = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
# An address written to dodge scrapers: "jane.doe [at] acme-corp [dot] com", "jane(at)acme.com".
_AT: Final = r"(?:\[at\]|\(at\)|\{at\})"
_DOT: Final = r"(?:\[dot\]|\(dot\)|\{dot\}| dot )"
_OBFUSCATED_EMAIL: Final = re.compile(
    rf"(?<![\w.+-])[\w.+-]+ ?{_AT} ?[\w-]+(?: ?(?:{_DOT}|\.) ?[\w-]+)+", re.IGNORECASE)
_TOKEN: Final = re.compile(r"(?<![A-Za-z0-9_+=-])[A-Za-z0-9_+=-]{20,200}(?![A-Za-z0-9_+=-])")
_JWT_SHAPE: Final = re.compile(r"[\w-]+\.[\w-]+\.[\w-]*")
_WORDY: Final = re.compile(r"[a-z]{3,}|[A-Z]{4,}")
_WORD: Final = re.compile(r"\w+")
_URL: Final = r"(https?://[^\s)\"'<>]+)"
# Alt text may hold brackets one level deep and line breaks ("![a [b] c](…)", "![x\ny](…)").
_ALT: Final = r"\[(?:[^\[\]]|\[[^\[\]]{0,300}\]){0,300}\]"
_MD_IMAGE: Final = re.compile(
    r"!" + _ALT + r"\(\s*<?" + _URL + r"|<img\b[^>]{0,300}?\bsrc(?:set)?\s*=\s*[\"']?" + _URL, re.IGNORECASE)
_MD_LINK: Final = re.compile(r"(?<!!)" + _ALT + r"\(\s*<?" + _URL)
# Reference-style: "![chart][1]" (or "![chart][]", "![1]") and, on a line of its own, "[1]: https://…".
_MD_REFERENCE: Final = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\](?:\[([^\[\]\n]*)\])?")
_MD_DEFINITION: Final = re.compile(r"^ {0,3}\[([^\[\]\n]+)\]:\s*<?" + _URL, re.MULTILINE)
_BARE_URL: Final = re.compile(r"https?://[^\s)\"'<>\]]+")
_LONG_PATH: Final = 64


@dataclass(frozen=True)
class Leak:
    """One thing found in the output: its kind, a masked snippet and whether it was a placeholder."""

    kind: str
    masked: str
    redacted: bool = False
    detail: dict[str, Any] | None = None


def placeholder_kind(placeholder: str) -> str:
    """The kind of a redaction placeholder (``[EMAIL]`` ``email``, ``[SECRET]`` ``secret``).

    >>> placeholder_kind("[SECRET:aws_access_key:AKIA…4VYD]"), placeholder_kind("[SECRET:#1a2b3c4d]")
    ('aws_access_key', 'secret')
    """
    found = SECRET_PLACEHOLDER.fullmatch(placeholder)
    if found is None:
        return _PLACEHOLDER_KIND[placeholder]
    return found.group("kind") or "secret"


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: country code, check digits, mod 97 == 1.

    >>> iban_valid("GB82WEST12345698765432"), iban_valid("GB82WEST12345698765433")
    (True, False)
    """
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def is_random_token(token: str, min_entropy: float) -> bool:
    """Whether ``token`` mixes upper, lower and digits like a random key, not an identifier.

    >>> is_random_token("q8Zr2Lp0Xv7Nw4Kt9Bs6", 3.5), is_random_token("getUserAccountById2024V2", 3.5)
    (True, False)
    """
    if not (any(c.isupper() for c in token) and any(c.islower() for c in token)
            and sum(c.isdigit() for c in token) >= 2):
        return False
    return not _looks_like_words(token) and shannon_entropy(token) >= min_entropy


def _looks_like_words(token: str) -> bool:
    """Identifiers (``ResNet50ImageNet1kV2``) are long letter runs with vowels; keys are not.

    Random base62 has vowels in about a fifth of its letters and short lower-case runs: this
    passes about 95 % of random 20-40 character tokens and stops camel-case and snake-case names.
    """
    letters = [c for c in token.lower() if c.isalpha()]
    vowels = sum(c in "aeiou" for c in letters) / max(1, len(letters))
    wordy = sum(len(run) for run in _WORDY.findall(token)) / len(token)
    return wordy >= 0.35 and vowels >= 0.25


def _clip(text: str, max_chars: int) -> str:
    # Leaks sit anywhere, but a bound per event matters more: keep the head and the tail.
    return text if len(text) <= max_chars else text[: max_chars // 2] + "\n" + text[-(max_chars // 2):]


def _compact(text: str) -> str:
    """Letters and digits only, upper case: ``4111 1111…`` and ``4111-1111…`` compare equal."""
    return re.sub(r"[^0-9A-Za-z]", "", text).upper()


def _ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _plain_address(obfuscated: str) -> str:
    """``jane.doe [at] acme [dot] com`` as ``jane.doe@acme.com``."""
    at = re.sub(rf"\s*{_AT}\s*", "@", obfuscated, flags=re.IGNORECASE)
    return re.sub(rf"\s*{_DOT}\s*", ".", at, flags=re.IGNORECASE).lower()


def _referenced(text: str) -> list[tuple[str, bool]]:
    """The URLs of reference-style images and links (``![chart][1]`` with ``[1]: https://…``), each
    with whether it is an image: an image is fetched as the output renders, as an inline one."""
    if "]:" not in text:
        return []
    defined = {m.group(1).strip().lower(): m.group(2) for m in _MD_DEFINITION.finditer(text)}
    if not defined:
        return []
    found: dict[str, bool] = {}
    for m in _MD_REFERENCE.finditer(text):
        if text.startswith(":", m.end()) and not m.group(3):  # the definition itself
            continue
        label = (m.group(3) or m.group(2)).strip().lower()
        url = defined.get(label)
        if url is not None:
            found[url] = found.get(url, False) or m.group(1) == "!"
    return list(found.items())


def _data_looking(value: str, min_entropy: float, *, image: bool) -> bool:
    """A URL part that carries data: encoded bytes, a redaction placeholder, personal data or a
    secret; for an image (fetched without a click) also plain text and long hex."""
    value = unquote(value)
    if _PLACEHOLDERS.search(value) or any(s.kind != "token" for s in find_sensitive(value)):
        return True
    if image and len(value) >= 20 and " " in value:  # an image fetch has no business carrying text
        return True
    if len(value) < 16:
        return False
    core = value.rstrip("=")
    if re.fullmatch(r"[0-9a-fA-F]+", core):  # in a link, most likely a commit or a digest
        return image and len(core) >= 24
    if not re.fullmatch(r"[A-Za-z0-9+/_.-]+", core) or (core.islower() and not any(map(str.isdigit, core))):
        return False
    return not _looks_like_words(core) and shannon_entropy(core) >= min_entropy - 0.5


class OutputLeakDetector:
    """Flags outputs carrying secrets, personal data, prompt text or exfiltration links.

    Options (keyword only): ``canaries`` strings that must never appear in an output;
    ``system_prompt`` whose word 8-grams are looked for; ``system_prompt_overlap`` share of
    those 8-grams that flags (0.3) and ``system_prompt_min_ngrams`` count that flags whatever
    the share (20); ``allowed_domains`` hosts (and their subdomains) whose images and links are
    never exfiltration; ``allowed_contacts`` e-mail addresses (``help@example.com``, or a whole
    domain as ``@example.com``) and phone numbers the model is meant to give out (a support desk),
    never personal data; ``entropy_threshold`` bits per character of a generic secret token (3.5);
    ``max_chars`` scanned per text, half at the head and half at the tail (50_000);
    ``confident`` score at which one response is enough (0.7) — a lone response below it (a
    single e-mail address or phone number, say) is held until the same caller's responses leak
    again within ``repeat_within_s`` seconds (3600.0), see :class:`~inferwatch.detectors.state.RepeatGate`.
    One finding per flagged response from :meth:`observe`; :meth:`close_window` has none.
    """

    name: ClassVar[str] = "output_leak"

    def __init__(
        self,
        *,
        canaries: list[str] | None = None,
        system_prompt: str | None = None,
        system_prompt_overlap: float = 0.3,
        system_prompt_min_ngrams: int = 20,
        allowed_domains: list[str] | None = None,
        allowed_contacts: list[str] | None = None,
        entropy_threshold: float = 3.5,
        max_chars: int = 50_000,
        confident: float = 0.7,
        repeat_within_s: float = 3600.0,
    ) -> None:
        if not 0.0 < system_prompt_overlap <= 1.0:
            raise ValueError(f"system_prompt_overlap must be in (0, 1], got {system_prompt_overlap}")
        if system_prompt_min_ngrams < 1 or max_chars < 1000:
            raise ValueError("system_prompt_min_ngrams must be >= 1 and max_chars >= 1000")
        self.canaries = [c for c in (canaries or []) if c]
        self.system_prompt_overlap = system_prompt_overlap
        self.system_prompt_min_ngrams = system_prompt_min_ngrams
        self.allowed_domains = tuple(d.lower().lstrip(".") for d in allowed_domains or [])
        contacts = [c.strip().lower() for c in allowed_contacts or [] if c.strip()]
        self._allowed_emails = tuple(c for c in contacts if "@" in c)
        self._allowed_phones = frozenset(_compact(c) for c in contacts if "@" not in c)
        self.entropy_threshold = entropy_threshold
        self.max_chars = max_chars
        self.confident = confident
        self.repeat_within_s = repeat_within_s
        self.gate = RepeatGate(confident, repeat_within_s)
        words = len(_WORD.findall(system_prompt or ""))
        self._ngram = min(NGRAM, words)  # a prompt under 8 words is matched whole
        self._prompt_ngrams = _ngrams(system_prompt or "", self._ngram) if self._ngram else set()

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Scan ``output.text`` against ``input.text`` (nothing when content capture is off);
        a doubtful finding waits for the caller to leak again (see the class docstring)."""
        return [out for finding in self.judge(event) for out in self.gate.admit(finding)]

    def judge(self, event: InferenceEvent) -> list[Finding]:
        """This response on its own, whatever the caller did before (``inferwatch scan``)."""
        if not event.output.text:
            return []
        output = _clip(event.output.text, self.max_chars)
        scan = _Scan(output, _clip(event.input.text or "", self.max_chars))
        self._secrets_and_pii(scan)
        self._placeholders(scan)
        self._prompt_leak(scan)
        self._exfiltration(scan)
        return [self._finding(event, scan)] if scan.leaks else []

    def close_window(self, end: datetime) -> list[Finding]:
        """Nothing to do at a window boundary: findings are per response."""
        return []

    def _allowed_contact(self, kind: str, value: str) -> bool:
        """Whether ``value`` is one of ``allowed_contacts`` (an e-mail address, or in an allowed
        ``@domain``; a phone number, whatever its spacing)."""
        if kind == "email":
            address = value.lower()
            return any(address == c or (c.startswith("@") and address.endswith(c))
                       for c in self._allowed_emails)
        return kind == "phone" and _compact(value) in self._allowed_phones

    def _secrets_and_pii(self, scan: _Scan) -> None:
        text = scan.output
        for span in find_sensitive(text):
            value = text[span.start:span.end]
            kind: str | None = span.kind if span.kind in ("email", "card", "phone") else None
            if span.kind == "vendor_key":
                kind = vendor_kind(value)
            elif span.kind == "jwt" and jwt_valid(value):
                kind = "jwt"
            elif span.kind == "private_key":
                kind, value = "private_key", value.split("-----")[1]
            if kind is not None and self._allowed_contact(kind, value):
                scan.claim(span.start, span.end)  # the support desk's address: meant to be given out
            elif kind is not None:
                scan.add(kind, value, span.start, span.end,
                         masked=f"-----{value}-----" if kind == "private_key" else None)
            elif span.kind in ("vendor_key", "jwt"):  # a test key or an AWS user id: not a token
                scan.claim(span.start, span.end)
            elif span.kind in ("auth", "assignment"):  # "password=…", "Bearer …": as redaction's [SECRET]
                scan.add("secret", value, span.start, span.end)
            # long tokens are left to the entropy rule below
        if "at" in text.lower():
            for match in _OBFUSCATED_EMAIL.finditer(text):
                address = _plain_address(match.group())
                if self._allowed_contact("email", address):
                    scan.claim(*match.span())
                else:
                    scan.add("email", match.group(), *match.span())
        for match in _IBAN.finditer(text):
            if iban_valid(match.group().replace(" ", "")):
                scan.add("iban", match.group(), *match.span())
        for pattern, kind in ((_SSN, "us_ssn"), (_UK_NI, "uk_ni_number")):
            for match in pattern.finditer(text):
                scan.add(kind, match.group(), *match.span())
        for url in _BARE_URL.finditer(text):  # ids in URLs are the exfiltration rule's business
            scan.claim(*url.span())
        if SAMPLE_JWT_CLAIMS in text:  # jwt.io's sample: its parts are no random tokens either
            for match in _JWT_SHAPE.finditer(text):
                if public_sample(match.group()):
                    scan.claim(*match.span())
        for match in _TOKEN.finditer(text):
            if is_random_token(match.group(), self.entropy_threshold) and not public_blob(
                    text, match.start(), match.group()):
                scan.add("high_entropy_token", match.group(), *match.span())

    def _placeholders(self, scan: _Scan) -> None:
        # Placeholders compare whole: one that names which key it was ("[SECRET:jwt:#1a2b3c4d]")
        # is in the input only if that same key was, as a raw value is.
        found = Counter(m.group(0) for m in _PLACEHOLDERS.finditer(scan.output))
        had = Counter(m.group(0) for m in _PLACEHOLDERS.finditer(scan.input))
        for placeholder, count in found.items():
            kind = placeholder_kind(placeholder)
            extra = count - had[placeholder]
            if had[placeholder]:
                scan.in_input[kind] += min(count, had[placeholder])
            for _ in range(max(extra, 0)):
                scan.leaks.append(Leak(kind, placeholder, redacted=True))

    def _prompt_leak(self, scan: _Scan) -> None:
        output = input_text = None
        for canary in self.canaries:
            if canary in scan.output:  # counted even when sent in: the caller should not have it
                scan.leaks.append(Leak("canary", mask(canary), detail={"in_input": canary in scan.input}))
                continue
            # In another case or spaced out ("canary-7f3a9b", "C A N A R Y 7F3A9B"): letters and
            # digits compared, case aside, for canaries that have at least eight of them.
            compact = _compact(canary)
            if len(compact) < 8:
                continue
            if output is None:
                output, input_text = _compact(scan.output), _compact(scan.input)
            if compact in output:
                scan.leaks.append(Leak("canary", mask(canary),
                                       detail={"in_input": compact in (input_text or ""), "form": "altered"}))
        if not self._prompt_ngrams:
            return
        shared = _ngrams(scan.output, self._ngram) & self._prompt_ngrams
        if shared and scan.input:
            shared -= _ngrams(scan.input, self._ngram)
        share = len(shared) / len(self._prompt_ngrams)
        if shared and (share >= self.system_prompt_overlap or len(shared) >= self.system_prompt_min_ngrams):
            detail = {"overlap_ngrams": len(shared), "prompt_ngrams": len(self._prompt_ngrams),
                      "share": round(share, 3), "threshold": self.system_prompt_overlap,
                      "min_ngrams": self.system_prompt_min_ngrams}
            scan.leaks.append(Leak("system_prompt", f"{len(shared)}/{len(self._prompt_ngrams)} "
                                   f"{self._ngram}-grams", detail=detail))

    def _exfiltration(self, scan: _Scan) -> None:
        if "](" not in scan.output and "<img" not in scan.output.lower() and "]:" not in scan.output:
            return
        urls = [(m.group(1) or m.group(2), True) for m in _MD_IMAGE.finditer(scan.output)]
        urls += [(m.group(1), False) for m in _MD_LINK.finditer(scan.output)]
        urls += _referenced(scan.output)
        for url, image in urls:
            if url in scan.input:
                scan.in_input["url"] += 1
                continue
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            if any(host == d or host.endswith("." + d) for d in self.allowed_domains):
                continue
            query = parse_qsl(parts.query, keep_blank_values=True)
            values = [(name, value) for name, value in query]
            values += [("path", seg) for seg in parts.path.split("/") if len(seg) >= 16]
            # Data in a host name ("SGVybWlvbmU….evil.example"): labels as long as a value.
            values += [("host", label) for label in host.split(".")[:-2] if len(label) >= 16]
            data = [name for name, value in values
                    if _data_looking(value, self.entropy_threshold, image=image)]
            if not data and len(query) > 1:
                # Spread over short parameters ("?a=SGVy&b=IGVt&c=…"), each too short to judge:
                # the values together.
                joined = "".join(value for _, value in query)
                if len(joined) >= 24 and _data_looking(joined, self.entropy_threshold, image=image):
                    data = ["query (together)"]
            if not data and _PLACEHOLDERS.search(url):
                # Redaction turned "?d=<secret>" into "?d=[SECRET:#1a2b3c4d]", whose "#" splits the
                # URL there: the placeholder is the data, wherever urlsplit put it.
                data = ["redacted"]
            if data:
                kind = "markdown_image" if image else "markdown_link"
            elif image and (parts.query or len(parts.path) > _LONG_PATH):
                kind = "remote_image"
            else:
                continue
            shown = "&".join(f"{name}={mask(value)}" for name, value in query[:5])
            path = parts.path if len(parts.path) <= 24 and "path" not in data else "/…"
            masked = f"{parts.scheme}://{host}{path}" + (f"?{shown}" if shown else "")
            scan.leaks.append(Leak(kind, masked, detail={"host": host, "image": image,
                                                         "data_parts": data}))

    def _finding(self, event: InferenceEvent, scan: _Scan) -> Finding:
        subject = subject_of(event) or f"model:{event.model or 'unknown'}"
        kinds = Counter(leak.kind for leak in scan.leaks)
        remaining = 1.0
        for kind in kinds:
            remaining *= 1.0 - KINDS[kind][2]
        score = round(min(1.0 - remaining, 1.0), 4)
        severity = max((KINDS[k][1] for k in kinds), key=SEVERITY_ORDER.__getitem__)
        families: dict[str, float] = {}
        for kind in kinds:
            family, _, weight = KINDS[kind]
            families[family] = max(families.get(family, 0.0), weight)
        ordered = sorted(families, key=lambda f: -families[f])
        evidence: dict[str, Any] = {
            "score": score,
            "families": ordered,
            "kinds": dict(kinds.most_common()),
            "snippets": [{"kind": leak.kind, "masked": leak.masked, "redacted": leak.redacted}
                         | ({"detail": leak.detail} if leak.detail else {})
                         for leak in scan.leaks[:MAX_SNIPPETS]],
            "absent_from_input": sorted(kinds),
            "already_in_input": dict(scan.in_input),
            "event_id": event.id,
            "output_chars": len(event.output.text or ""),
            "scanned_chars": len(scan.output),
        }
        what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in kinds.most_common(4))
        return Finding(
            detector=self.name,
            kind="abuse",
            severity=severity,
            score=score,
            title=f"Sensitive data in output to {subject}"
            + (f" from model {event.model}" if event.model else "")
            + f": {', '.join(f.replace('_', ' ') for f in ordered)}",
            summary=f"The response carried {what} not present in the request (score {score:.2f}); "
            "values are masked in the evidence.",
            subject=subject,
            evidence=evidence,
            **about_event(event),
        )


class _Scan:
    """One response being scanned: the texts, the spans already claimed and what was found."""

    def __init__(self, output: str, input_text: str) -> None:
        self.output = output
        self.input = input_text
        self.leaks: list[Leak] = []
        self.in_input: Counter[str] = Counter()
        self._taken: list[tuple[int, int]] = []
        self._compact_input: str | None = None

    def add(self, kind: str, value: str, start: int, end: int, masked: str | None = None) -> None:
        """Record ``value`` unless it overlaps an earlier match or the caller already had it."""
        if not self.claim(start, end):
            return
        if self._in_input(kind, value):
            self.in_input[kind] += 1
        else:
            self.leaks.append(Leak(kind, masked or mask(value)))

    def claim(self, start: int, end: int) -> bool:
        """Mark a span as explained; ``False`` when it overlaps one claimed before."""
        if any(start < t_end and t_start < end for t_start, t_end in self._taken):
            return False
        self._taken.append((start, end))
        return True

    def _in_input(self, kind: str, value: str) -> bool:
        if kind in ("card", "phone", "iban", "us_ssn", "uk_ni_number"):  # spacing may differ
            if self._compact_input is None:
                self._compact_input = _compact(self.input)
            return _compact(value) in self._compact_input
        if kind == "email":
            return value.lower() in self.input.lower()
        return value in self.input
