"""Cheap per-prompt text features for drift: dominant script, a language guess, hashed n-grams.

These run once per event in the detector's hot path, so each looks at the head of the text
only and does its per-character work in C (``str`` methods, ``re``, numpy), never in a Python
loop over characters:

* :func:`script_of` — the Unicode script most of the first :data:`HEAD_CHARS` characters'
  letters belong to, by code-point ranges (digits, punctuation, symbols, emoji and combining
  marks are not letters and do not vote); ``"none"`` when there is no letter.
* :func:`language_of` — a guess from stopwords for Latin- and Cyrillic-script text (``en fr de es
  it pt nl ru uk pl tr sv``), from the script where it names one language (``ko ja th he el``,
  ``ar`` for Arabic script, ``zh`` for Han without kana); ``"und"`` (undetermined, BCP 47)
  when unsure: code, numbers, very short text, other languages, or two languages too close.
* :func:`script_and_language` — both at once, sharing the work; this is what the drift
  detector calls per event (``features_of(event, text_features=script_and_language)``).
* :func:`ngram_hashes` — the prompt as a bounded set of hashed character n-gram indices for
  the text domain classifier; the hash is fixed (FNV-1a over code points with a 64-bit
  finaliser), so the same text gives the same indices in every process and release, which
  persisted references depend on.

Measured as CPU time per call (Python 3.11, numpy 2.4, a shared 2-core machine), in µs, for a
68-character English prompt, a 71-character Russian one, and 2,000 characters of English
(real prompts), Russian and French:

=========================  =====  =====  ========  ========  ========
call                       en 68  ru 71  en 2,000  ru 2,000  fr 2,000
=========================  =====  =====  ========  ========  ========
``script_of``                0.2    5       0.3      10        0.9
``script_and_language``      4.6   12      10        27       17
``ngram_hashes``            20     20     115       115      107
=========================  =====  =====  ========  ========  ========

ASCII text (most prompts) never touches numpy for its script: ``str.isascii`` is O(1); mostly
ASCII Latin text (French, German, ...) is settled by counting ASCII letters; other text maps
code points to scripts with one ``searchsorted``. Words are split in bytes rather than with a
Unicode regex (seven times faster). Reading only the head keeps long prompts as cheap as short
ones without changing answers: a prompt's script is settled in :data:`HEAD_CHARS` characters and
its language in :data:`LANGUAGE_CHARS`. :func:`ngram_hashes` reads more (:data:`NGRAM_CHARS`)
because it sketches the prompt's content; it is the dearest, but the drift summary calls it only
for prompts that enter the window's bottom-k text sample, not for every event.

On the 60 prompts of ``tests/detectors/drift/test_textstats.py`` (5 ordinary requests in each of
the 12 languages) every guess is right; on 24 short ones (4-8 words) 17 are right and 7 ``und``,
none wrong; code, JSON, SQL, logs and numbers are ``und``. On 3,916 public prompts, nearly all
English (role play, security questions, maths problems, code completion): 3,559 ``en``, 327
``und`` (JSON, templates, code) and 30 other languages, each checked by eye to be written in
that language (one an English template around a longer Arabic text).

Known limits, by design: languages outside the list above come out as the closest listed one
or ``"und"`` (Danish or Norwegian may read as ``sv``, Catalan as ``es``/``fr``, Belarusian or
Bulgarian as ``ru``/``uk``); Devanagari is ``"und"`` (Hindi, Marathi and Nepali share it);
Japanese written only in kanji reads as ``zh``.

>>> script_and_language("Could you summarise this article in three bullet points?")
('latin', 'en')
>>> script_and_language("Pourriez-vous résumer cet article en trois points ?")
('latin', 'fr')
>>> script_and_language("Расскажи, пожалуйста, как это работает и что мне нужно сделать.")
('cyrillic', 'ru')
>>> script_and_language("東京の天気はどうですか")
('hiragana_katakana', 'ja')
>>> script_and_language("for (i = 0; i < n; i++) { total += x[i]; }")
('latin', 'und')
>>> script_and_language("12345 67890")
('none', 'und')
>>> len(ngram_hashes("hello world")), ngram_hashes("Hello   World") == ngram_hashes("hello world")
(11, True)
"""

# ruff: noqa: RUF001  (stopwords are written in other scripts on purpose)

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from inferwatch.detectors.stats import IntArray

U64Array = npt.NDArray[np.uint64]

HEAD_CHARS = 512
"""Characters of a text read by :func:`script_of`."""
LANGUAGE_CHARS = 256
"""Characters of a text read by :func:`language_of`: some forty words, plenty for stopwords."""
NGRAM_CHARS = 2_048
"""Characters of a text read by :func:`ngram_hashes`."""
UNDETERMINED = "und"

SCRIPTS = ("latin", "greek", "cyrillic", "arabic", "hebrew", "devanagari", "han", "hiragana_katakana",
           "hangul", "thai", "other")
"""Scripts :func:`script_of` names, besides ``"none"``; on a tie the earlier one wins."""

# Code-point ranges: each start runs up to the next one. "-" is not a letter (digits,
# punctuation, symbols, combining marks, private use): it does not vote. Gaps in well-known
# blocks are "other" (Armenian, Georgian, Indic scripts other than Devanagari, Ethiopic, ...).
_RANGES: tuple[tuple[int, str], ...] = (
    (0x0000, "-"), (0x0041, "latin"), (0x005B, "-"), (0x0061, "latin"), (0x007B, "-"),
    (0x00C0, "latin"), (0x00D7, "-"), (0x00D8, "latin"), (0x00F7, "-"), (0x00F8, "latin"),
    (0x02B0, "-"), (0x0370, "greek"), (0x0400, "cyrillic"), (0x0530, "other"), (0x0590, "-"),
    (0x05D0, "hebrew"), (0x0600, "-"), (0x0620, "arabic"), (0x064B, "-"), (0x066E, "arabic"),
    (0x0700, "other"), (0x0750, "arabic"), (0x0780, "other"), (0x08A0, "arabic"),
    (0x0900, "devanagari"), (0x0966, "-"), (0x0970, "devanagari"), (0x0980, "other"),
    (0x0E00, "thai"), (0x0E50, "-"), (0x0E5A, "thai"), (0x0E80, "other"), (0x1100, "hangul"),
    (0x1200, "other"), (0x1C80, "cyrillic"), (0x1C90, "other"), (0x1D00, "-"), (0x1E00, "latin"),
    (0x1F00, "greek"), (0x2000, "-"), (0x2C00, "other"), (0x2C60, "latin"), (0x2C80, "other"),
    (0x2DE0, "cyrillic"), (0x2E00, "-"), (0x2E80, "han"), (0x2FE0, "-"),
    (0x3040, "hiragana_katakana"), (0x3100, "han"), (0x3130, "hangul"), (0x3190, "han"),
    (0x31F0, "hiragana_katakana"), (0x3200, "-"), (0x3400, "han"), (0x4DC0, "-"), (0x4E00, "han"),
    (0xA000, "other"), (0xA640, "cyrillic"), (0xA6A0, "other"), (0xA700, "-"), (0xA720, "latin"),
    (0xA800, "other"), (0xA8E0, "devanagari"), (0xA900, "other"), (0xA960, "hangul"),
    (0xA980, "other"), (0xAC00, "hangul"), (0xD800, "-"), (0xF900, "han"), (0xFB00, "latin"),
    (0xFB07, "other"), (0xFB1D, "hebrew"), (0xFB50, "arabic"), (0xFE00, "-"), (0xFE70, "arabic"),
    (0xFEFF, "-"), (0xFF21, "latin"), (0xFF3B, "-"), (0xFF41, "latin"), (0xFF5B, "-"),
    (0xFF66, "hiragana_katakana"), (0xFFA0, "hangul"), (0xFFDD, "-"), (0x10000, "other"),
    (0x1B000, "hiragana_katakana"), (0x1B170, "other"), (0x1D000, "-"), (0x20000, "han"),
    (0x40000, "-"),
)
_STARTS = np.array([start for start, _ in _RANGES], dtype=np.uint32)
_SLOT = {name: i for i, name in enumerate(SCRIPTS)}
_NOT_LETTER = len(SCRIPTS)
_SCRIPT_OF_RANGE: IntArray = np.array([_SLOT.get(name, _NOT_LETTER) for _, name in _RANGES], dtype=np.int64)
_ASCII_LETTER = re.compile(r"[A-Za-z]")

# Script -> language where the script names one language (Arabic script also writes Persian and
# Urdu, but "ar" is the useful guess for inference traffic; Han is "zh" unless kana is present).
_LANGUAGE_OF_SCRIPT = {"hangul": "ko", "hiragana_katakana": "ja", "thai": "th", "hebrew": "he",
                       "greek": "el", "arabic": "ar", "han": "zh"}
_KANA_SHARE_FOR_JAPANESE = 0.05
"""Han-dominant text with at least this share of kana among Han + kana letters is Japanese."""

# High-frequency function words, per language. A word several languages share splits its vote
# between them, so the words that tell close languages apart decide.
_STOPWORDS: dict[str, str] = {
    "en": "the be to of and a in that have i it for not on with he as you do at this but his by from "
          "they we say her she or an will my one all would there their what so up out if about who get "
          "which go me when make can like no just him know take into your some could them see other "
          "than then now only its over think also after use how our work well way even new want because "
          "any these give most us is are was were has had been does did please write explain tell help "
          "should why where s summarize summarise translate",
    "fr": "le la les de des du un une et est en que qui dans pour pas ne sur au aux avec ce cette ces "
          "il elle ils elles nous vous je tu te on se sont mais ou par plus son sa ses leur leurs qu c "
          "l d j n s été être avoir fait comme tout très bien aussi peut si moi mon ma mes votre vos "
          "notre cet pouvez peux où quel quelle quelles quels pourquoi comment a à ai sais veux suis "
          "merci écris explique traduis résume donne",
    "de": "der die das und ist nicht ich sie es ein eine einen einem einer zu mit auf für den dem von "
          "sich des auch als an wie im dass daß bei oder aber wir wird sind nach noch kann mein meine "
          "kein keine keinen werden habe hat war wurde was bitte mir mich dir du ihr uns über unter "
          "durch nur schon wenn sehr wo warum welche diese dieser dieses diesen hier zum zur vom gibt "
          "gib schreib schreibe erkläre übersetze fasse",
    "es": "el la los las de del y que en un una es por con para se no lo su sus al como más pero muy "
          "está están este esta estos ser ha han hay mi me te yo tú usted qué cómo cuál cuáles dónde "
          "porque sobre también o le les fue era ya entre cuando sin todo puedes quiero gracias a tengo "
          "escribe explica traduce resume dame",
    "it": "il lo la i gli le di del della dello dei delle dell che e è un una uno per non con sono da "
          "dal nel nella si ma come questo questa questi anche più ho hai ha mi ti ci vi io tu lui lei "
          "noi voi loro cosa perché quando dove sul sulla alla al allo agli alle essere stato molto "
          "puoi posso voglio vorrei grazie a quali quale scrivi spiega traduci riassumi dammi",
    "pt": "o a os as de do da dos das e que em no na nos nas um uma é para com não se por mais como mas "
          "foi ao aos seu sua ele ela eles você eu meu minha isso este esta está são ser tem muito "
          "também quando onde porque qual quais já pelo pela sobre pode obrigado faço escreva explique "
          "traduza resuma",
    "nl": "de het een en van ik te dat die in is niet op zijn met voor ook als maar om aan er je wat "
          "kan hoe dit wij we zij naar bij nog heb hebben worden wordt geen uit mijn jij hij ze zo door "
          "deze over alle waar waarom welke graag kunt u schrijf leg vertaal vat geef",
    "ru": "и в во не на я что с со по это как а он она оно они но к у из за то же ты вы мы так все всё "
          "был была было были его ее её для бы мне меня есть только или еще ещё когда уже если нет "
          "очень почему где там тут вот чтобы этот эта эти пожалуйста можно какой который каковы о об "
          "ли при мой моя моё свой сейчас напиши объясни переведи перескажи дай расскажи",
    "uk": "і й в у не на що з із це як а та але до за я ти ви ми він вона воно вони так для від його її "
          "є чи ще вже коли якщо ні дуже чому де там тут мене мені тільки або бути було цей ця ці який "
          "яка які будь ласка можна мій моя своє зараз напиши поясни переклади перекажи дай розкажи",
    "pl": "i w z na się nie to że jest do o jak ale co tak po za od czy jego by mnie mi ten ta te tym "
          "tylko już są dla może bardzo jestem jesteś który która które przez oraz także ich go też "
          "proszę gdzie dlaczego kiedy być był była jakie jaka jaki napisz wyjaśnij przetłumacz streść "
          "daj",
    "tr": "ve bir bu da de için ile çok ne gibi daha ama olarak var yok mi mı mu mü misin mısın musun "
          "ben sen biz siz onlar o değil kadar sonra önce nasıl neden şey en veya ya ise her bana beni "
          "benim lütfen nedir nelerdir hangi olan oldu olduğu ki şu yaz açıkla çevir özetle ver",
    "sv": "och att det som en på är av för med till den har de inte om ett han men var jag hon sig så "
          "kan vi du eller när från hur vad ska också mycket detta dessa min mitt din ditt vår deras "
          "inget ingen varför vilken vilka snälla skriv förklara översätt sammanfatta ge",
}
LANGUAGES = tuple(_STOPWORDS)
"""Languages :func:`language_of` tells apart by stopwords."""
_LANGUAGE_SLOT = {language: i for i, language in enumerate(LANGUAGES)}


def _vote_table(spelled: dict[str, str], weight: float) -> dict[str, tuple[tuple[int, float], ...]]:
    """``token -> ((language slot, vote), ...)``: a token's ``weight`` split between its languages."""
    owners: dict[str, list[int]] = {}
    for language, tokens in spelled.items():
        for token in dict.fromkeys(tokens.split()):
            owners.setdefault(token, []).append(_LANGUAGE_SLOT[language])
    return {token: tuple((slot, weight / len(slots)) for slot in slots) for token, slots in owners.items()}


_WORD_VOTES = _vote_table(_STOPWORDS, 1.0)
# Letters (after lowercasing) that only some listed languages use; each occurrence is half a vote.
# "\u0307" is what Turkish dotted capital I leaves after str.lower().
_LETTER_VOTES = _vote_table({
    "tr": "ı ş ğ \u0307 â ç ö ü", "pl": "ł ą ę ś ź ż ć ń ó", "es": "ñ ¿ ¡ á í ó ú é",
    "pt": "ã õ á í ó ú é ê ô â à ç", "fr": "œ î û ù ï ë è ê ô â à ç é", "it": "ù è à ì ò é",
    "sv": "å ä ö", "de": "ß ä ö ü", "nl": "ë", "uk": "і ї є ґ", "ru": "ы э ъ ё",
}, 0.5)
_HINT_LETTER = re.compile("[" + "".join(_LETTER_VOTES) + "]")
# Words are split in bytes: ASCII non-letters become spaces in the UTF-8 encoding (multi-byte
# characters are all >= 0x80, so they pass untouched), which is several times faster than a
# Unicode regex; the few non-ASCII marks that sit next to words are replaced first.
_WORD_BYTES = bytes(byte if byte >= 0x80 or chr(byte).isalpha() else 0x20 for byte in range(256))
_WIDE_MARKS = ("\u2019", "\u2018", "\u00ab", "\u00bb", "\u201c", "\u201d", "\u201e", "\u00bf",
               "\u00a1", "\u2014", "\u2013", "\u2026")
_CODE_MARKS = b"{}[]();=<>_|\\/*#$&`"
_DIGITS = b"0123456789"
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LETTERS = _UPPER + _UPPER.lower()
_MIN_VOTES = 1.5
"""Fewest votes for a guess: one distinctive stopword and a bit more."""
_MIN_VOTE_SHARE = 0.12
"""Votes for the best language per word: prose is ~30-50 % stopwords, identifiers and code less."""
_MIN_LEAD = 1.5
"""The best language needs this many times the runner-up's votes."""
_MAX_CODE_SHARE = 0.06
"""Above this share of code marks (brackets, operators, indents) among non-space characters: code, ``und``."""
_MAX_DIGIT_SHARE = 0.25
"""Above this share of digits among non-space characters a text is numbers, logs or data: ``und``."""
_MAX_UPPER_SHARE = 0.4
"""Above this share of capitals among ASCII letters a text is SQL, logs or shouting: ``und``."""


def _script_counts(head: str) -> IntArray:
    """Letters per script (indexed like :data:`SCRIPTS`, plus a last slot for non-letters)."""
    points = np.frombuffer(head.encode("utf-32-le"), dtype=np.uint32)
    slots = _SCRIPT_OF_RANGE[np.searchsorted(_STARTS, points, side="right") - 1]
    return np.bincount(slots, minlength=_NOT_LETTER + 1)


def _dominant(counts: IntArray) -> str:
    letters = counts[:_NOT_LETTER]
    best = int(letters.argmax())
    return SCRIPTS[best] if letters[best] > 0 else "none"


def _script(head: str) -> tuple[str, IntArray | None]:
    """The dominant script and, when they were needed, the letters per script."""
    if head.isascii():  # O(1) in CPython: most prompts take this path
        return ("latin" if _ASCII_LETTER.search(head) else "none"), None
    ascii_part = head.encode("ascii", "ignore")
    if _count(ascii_part, _ASCII_LETTERS) > len(head) - len(ascii_part):
        return "latin", None  # more ASCII letters than non-ASCII characters of any kind
    counts = _script_counts(head)
    return _dominant(counts), counts


def script_of(text: str) -> str:
    """The Unicode script most letters of the text's head belong to; ``"none"`` without letters.

    >>> script_of("Привет, мир"), script_of("안녕하세요"), script_of("🙂 42 !"), script_of("")
    ('cyrillic', 'hangul', 'none', 'none')
    """
    return _script(text[:HEAD_CHARS])[0]


def _count(raw: bytes, marks: bytes) -> int:
    """Occurrences of any of the ASCII ``marks`` in UTF-8 ``raw`` (in C: delete, compare lengths)."""
    return len(raw) - len(raw.translate(None, marks))


def _looks_like_code(head: str) -> bool:
    """Code, data, numbers, logs or SQL rather than prose."""
    raw = head.encode()
    visible = max(1, len(head) - head.count(" "))
    # Indented lines and lines ending in a colon count as marks too: Python has few brackets.
    marks = _count(raw, _CODE_MARKS) + head.count("\n    ") + head.count("\n\t") + head.count(":\n")
    return (marks > _MAX_CODE_SHARE * visible
            or _count(raw, _DIGITS) > _MAX_DIGIT_SHARE * visible
            or _count(raw, _UPPER) > _MAX_UPPER_SHARE * max(1, _count(raw, _ASCII_LETTERS)))


def _guess_by_stopwords(head: str) -> str:
    if _looks_like_code(head):
        return UNDETERMINED
    lowered = head.lower()
    votes = [0.0] * len(LANGUAGES)
    if not lowered.isascii():
        for letter in _HINT_LETTER.findall(lowered):
            for slot, vote in _LETTER_VOTES[letter]:
                votes[slot] += vote
        lowered = lowered.replace("i\u0307", "i")
        for mark in _WIDE_MARKS:
            if mark in lowered:
                lowered = lowered.replace(mark, " ")
    words = lowered.encode().translate(_WORD_BYTES).decode().split()
    for word in words:
        for slot, vote in _WORD_VOTES.get(word, ()):
            votes[slot] += vote
    ranked = sorted(range(len(LANGUAGES)), key=votes.__getitem__, reverse=True)
    best, second = votes[ranked[0]], votes[ranked[1]]
    if best < _MIN_VOTES or best < _MIN_VOTE_SHARE * len(words) or best < _MIN_LEAD * second:
        return UNDETERMINED
    return LANGUAGES[ranked[0]]


def script_and_language(text: str) -> tuple[str, str]:
    """``(script_of(text), language_of(text))``, computed together (the per-event call).

    >>> script_and_language("Wie kann ich mein Passwort zurücksetzen, wenn ich die E-Mail nicht habe?")
    ('latin', 'de')
    >>> script_and_language("Как мне сбросить пароль?"), script_and_language("Як мені скинути пароль?")
    (('cyrillic', 'ru'), ('cyrillic', 'uk'))
    """
    script, counts = _script(text[:HEAD_CHARS])
    if script in ("latin", "cyrillic"):
        return script, _guess_by_stopwords(text[:LANGUAGE_CHARS])
    if script == "han" and counts is not None:
        kana, han = int(counts[_SLOT["hiragana_katakana"]]), int(counts[_SLOT["han"]])
        if kana >= _KANA_SHARE_FOR_JAPANESE * (kana + han):
            return script, "ja"
    return script, _LANGUAGE_OF_SCRIPT.get(script, UNDETERMINED)


def language_of(text: str) -> str:
    """A cheap guess of the text's language (ISO 639-1), ``"und"`` when unsure.

    >>> language_of("¿Puedes explicarme cómo funciona la fotosíntesis?"), language_of("SELECT * FROM t;")
    ('es', 'und')
    """
    return script_and_language(text)[1]


# --- hashed character n-grams ------------------------------------------------------------------

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def _gram_hashes(points: U64Array, n: int) -> U64Array:
    """64-bit hashes of every n-gram of code points: FNV-1a over the points, then fmix64."""
    count = len(points) - n + 1
    h = np.full(count, _FNV_OFFSET, dtype=np.uint64)
    for j in range(n):
        h ^= points[j:j + count]
        h *= _FNV_PRIME  # wraps modulo 2**64, as FNV intends
    h ^= h >> _SHIFT  # fmix64 (MurmurHash3's finaliser): FNV's low bits alone mix poorly
    h *= _MIX_1
    h ^= h >> _SHIFT
    h *= _MIX_2
    h ^= h >> _SHIFT
    return h


def _distinct_sorted(values: U64Array) -> U64Array:
    """``np.unique`` without its overhead (four times slower on a few thousand values)."""
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


def ngram_hash(gram: str) -> int:
    """The 64-bit hash :func:`ngram_hashes` gives one n-gram (reference implementation, pure Python).

    >>> hex(ngram_hash("abc"))
    '0x33ebaf9927cbc5bd'
    """
    mask = (1 << 64) - 1
    h = int(_FNV_OFFSET)
    for char in gram:
        h = ((h ^ ord(char)) * int(_FNV_PRIME)) & mask
    for multiplier in (int(_MIX_1), int(_MIX_2)):
        h ^= h >> 33
        h = (h * multiplier) & mask
    return h ^ (h >> 33)


def ngram_hashes(text: str, *, n: int = 3, dims: int = 2**18, limit: int = 256) -> list[int]:
    """Sorted distinct indices in ``[0, dims)`` of the text's hashed character n-grams.

    The text (its first :data:`NGRAM_CHARS` characters) is lowercased, runs of whitespace become
    one space, and one space pads each end so words' first and last letters form their own
    n-grams. Of the distinct n-grams, the ``limit`` with the smallest 64-bit hashes are kept
    (a bottom-k sketch: the same n-gram is kept or dropped by the same rule in every text), then
    mapped to ``hash % dims``; collisions can leave fewer than ``limit`` indices. A text shorter
    than ``n`` after normalising gives its single padded gram, an empty one gives ``[]``.

    >>> ngram_hashes(""), ngram_hashes("ab", n=3) == ngram_hashes("AB ", n=3)
    ([], True)
    >>> idx = ngram_hashes("the quick brown fox", dims=1024, limit=8)
    >>> len(idx), all(0 <= i < 1024 for i in idx), idx == sorted(set(idx))
    (8, True, True)
    """
    if n < 1 or dims < 1 or limit < 1:
        raise ValueError(f"n, dims and limit must be positive, got n={n}, dims={dims}, limit={limit}")
    normalised = " ".join(text[:NGRAM_CHARS].lower().split())
    if not normalised:
        return []
    padded = f" {normalised} "
    points = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(points) < n:
        return [ngram_hash(padded) % dims]
    hashes = _gram_hashes(points, n)
    # The limit smallest distinct hashes are among the 2*limit+1 smallest occurrences unless the
    # text repeats itself a lot; partitioning first avoids sorting all of a long text's grams.
    candidates = hashes if len(hashes) <= 2 * limit + 1 else np.partition(hashes, 2 * limit)[: 2 * limit + 1]
    kept = _distinct_sorted(candidates)[:limit]
    if len(kept) < limit and len(candidates) < len(hashes):
        kept = _distinct_sorted(hashes)[:limit]
    indices: list[int] = _distinct_sorted(kept % np.uint64(dims)).tolist()
    return indices
