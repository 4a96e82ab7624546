"""textstats: dominant script, stopword language guess and hashed n-grams of a prompt."""

# ruff: noqa: RUF001  (prompts in other scripts on purpose)

from __future__ import annotations

import doctest
import os
import random
import subprocess
import sys

import pytest

from inferwatch.detectors.drift import textstats
from inferwatch.detectors.drift.textstats import (
    HEAD_CHARS,
    NGRAM_CHARS,
    language_of,
    ngram_hash,
    ngram_hashes,
    script_and_language,
    script_of,
)

# Ordinary chat prompts, the same five requests in each language.
PROMPTS: dict[str, list[str]] = {
    "en": [
        "Can you help me write a cover letter for a job as a data analyst?",
        "What is the difference between a list and a tuple in Python?",
        "Please summarise the following meeting notes in three bullet points.",
        "I want to plan a trip to Japan in the spring, where should I go?",
        "Explain how vaccines train the immune system, in simple words.",
    ],
    "fr": [
        "Peux-tu m'aider à écrire une lettre de motivation pour un poste d'analyste ?",
        "Quelle est la différence entre une liste et un tuple en Python ?",
        "Résume les notes de la réunion suivante en trois points, s'il te plaît.",
        "Je veux organiser un voyage au Japon au printemps, où est-ce que je dois aller ?",
        "Explique comment les vaccins entraînent le système immunitaire, avec des mots simples.",
    ],
    "de": [
        "Kannst du mir helfen, ein Anschreiben für eine Stelle als Datenanalyst zu schreiben?",
        "Was ist der Unterschied zwischen einer Liste und einem Tupel in Python?",
        "Bitte fasse die folgenden Notizen aus der Besprechung in drei Punkten zusammen.",
        "Ich möchte im Frühling eine Reise nach Japan planen, wohin soll ich fahren?",
        "Erkläre mit einfachen Worten, wie Impfstoffe das Immunsystem trainieren.",
    ],
    "es": [
        "¿Puedes ayudarme a escribir una carta de presentación para un puesto de analista de datos?",
        "¿Cuál es la diferencia entre una lista y una tupla en Python?",
        "Por favor, resume las notas de la reunión en tres puntos.",
        "Quiero planear un viaje a Japón en primavera, ¿a dónde debería ir?",
        "Explica con palabras sencillas cómo las vacunas entrenan al sistema inmunitario.",
    ],
    "it": [
        "Puoi aiutarmi a scrivere una lettera di presentazione per un lavoro come analista di dati?",
        "Qual è la differenza tra una lista e una tupla in Python?",
        "Per favore riassumi gli appunti della riunione in tre punti.",
        "Voglio organizzare un viaggio in Giappone in primavera, dove dovrei andare?",
        "Spiega con parole semplici come i vaccini allenano il sistema immunitario.",
    ],
    "pt": [
        "Você pode me ajudar a escrever uma carta de apresentação para uma vaga de analista de dados?",
        "Qual é a diferença entre uma lista e uma tupla em Python?",
        "Por favor, resuma as notas da reunião em três tópicos.",
        "Eu quero planejar uma viagem ao Japão na primavera, para onde devo ir?",
        "Explique com palavras simples como as vacinas treinam o sistema imunológico.",
    ],
    "nl": [
        "Kun je me helpen een sollicitatiebrief te schrijven voor een baan als data-analist?",
        "Wat is het verschil tussen een lijst en een tuple in Python?",
        "Vat de volgende notities van de vergadering samen in drie punten, alsjeblieft.",
        "Ik wil in het voorjaar een reis naar Japan plannen, waar moet ik heen?",
        "Leg in eenvoudige woorden uit hoe vaccins het immuunsysteem trainen.",
    ],
    "ru": [
        "Можешь помочь мне написать сопроводительное письмо на должность аналитика данных?",
        "В чём разница между списком и кортежем в Python?",
        "Пожалуйста, кратко изложи заметки со встречи в трёх пунктах.",
        "Я хочу спланировать поездку в Японию весной, куда мне стоит поехать?",
        "Объясни простыми словами, как вакцины тренируют иммунную систему.",
    ],
    "uk": [
        "Чи можеш ти допомогти мені написати супровідний лист на посаду аналітика даних?",
        "Яка різниця між списком і кортежем у Python?",
        "Будь ласка, коротко виклади нотатки зі зустрічі у трьох пунктах.",
        "Я хочу спланувати подорож до Японії навесні, куди мені варто поїхати?",
        "Поясни простими словами, як вакцини тренують імунну систему.",
    ],
    "pl": [
        "Czy możesz mi pomóc napisać list motywacyjny na stanowisko analityka danych?",
        "Jaka jest różnica między listą a krotką w Pythonie?",
        "Proszę, streść notatki ze spotkania w trzech punktach.",
        "Chcę zaplanować wiosną podróż do Japonii, gdzie powinienem pojechać?",
        "Wyjaśnij prostymi słowami, jak szczepionki trenują układ odpornościowy.",
    ],
    "tr": [
        "Veri analisti pozisyonu için bir ön yazı yazmama yardım eder misin?",
        "Python'da liste ile demet arasındaki fark nedir?",
        "Lütfen toplantı notlarını üç madde halinde özetle.",
        "İlkbaharda Japonya'ya bir gezi planlamak istiyorum, nereye gitmeliyim?",
        "Aşıların bağışıklık sistemini nasıl eğittiğini basit kelimelerle açıkla.",
    ],
    "sv": [
        "Kan du hjälpa mig att skriva ett personligt brev för en tjänst som dataanalytiker?",
        "Vad är skillnaden mellan en lista och en tupel i Python?",
        "Sammanfatta anteckningarna från mötet i tre punkter, tack.",
        "Jag vill planera en resa till Japan på våren, vart ska jag åka?",
        "Förklara med enkla ord hur vaccin tränar immunförsvaret.",
    ],
}

# Short prompts (4-8 words): the guess may be "und", but never another language.
SHORT: dict[str, list[str]] = {
    "en": ["Summarize the plot of Hamlet.", "Write a short poem about the sea at night."],
    "fr": ["Résume l'intrigue de Hamlet.", "Écris un court poème sur la mer la nuit."],
    "de": ["Fasse die Handlung von Hamlet zusammen.", "Schreib ein kurzes Gedicht über das Meer bei Nacht."],
    "es": ["Resume la trama de Hamlet.", "Escribe un poema corto sobre el mar de noche."],
    "it": ["Riassumi la trama di Amleto.", "È sicuro prendere l'ibuprofene con il caffè?"],
    "pt": ["Resuma o enredo de Hamlet.", "Escreva um poema curto sobre o mar à noite."],
    "nl": ["Vat de plot van Hamlet samen.", "Schrijf een kort gedicht over de zee bij nacht."],
    "ru": ["Кратко перескажи сюжет Гамлета.", "Безопасно ли принимать ибупрофен с кофе?"],
    "uk": ["Коротко перекажи сюжет Гамлета.", "Чи безпечно приймати ібупрофен з кавою?"],
    "pl": ["Streść fabułę Hamleta.", "Napisz krótki wiersz o morzu nocą."],
    "tr": ["Hamlet'in konusunu özetle.", "İbuprofeni kahveyle almak güvenli mi?"],
    "sv": ["Sammanfatta handlingen i Hamlet.", "Skriv en kort dikt om havet på natten."],
}

NOT_PROSE = [
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) { sum += x[i]; }",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    '{"user": "alice", "items": [1, 2, 3], "total": 42.5}',
    "3.14159 2.71828 1.41421 1.73205",
    "import numpy as np\nx = np.zeros((3, 4))\nprint(x.shape)",
    "if x is not None and len(x) > 0: return x[0]",
    '<div class="row"><span>{{ item.name }}</span></div>',
    "2024-01-05 12:00:01 ERROR worker-3 timeout after 30s",
    "ok",
    "",
    "!!! ??? ...",
]


@pytest.mark.parametrize(("language", "prompt"), [(lang, p) for lang, ps in PROMPTS.items() for p in ps])
def test_language_of_ordinary_prompts(language: str, prompt: str) -> None:
    assert language_of(prompt) == language


@pytest.mark.parametrize(("language", "prompt"), [(lang, p) for lang, ps in SHORT.items() for p in ps])
def test_short_prompts_are_right_or_undetermined_never_wrong(language: str, prompt: str) -> None:
    assert language_of(prompt) in (language, "und")


def test_short_prompts_are_mostly_still_recognised() -> None:
    guesses = [language_of(p) == lang for lang, ps in SHORT.items() for p in ps]
    assert sum(guesses) >= 0.6 * len(guesses)


@pytest.mark.parametrize("text", NOT_PROSE)
def test_code_numbers_logs_and_fragments_are_undetermined(text: str) -> None:
    assert language_of(text) == "und"


def test_code_with_english_keywords_is_not_english() -> None:
    code = "for item in items:\n    if item is not None and item.ok:\n        yield item.value\n"
    assert language_of(code) == "und"
    assert language_of("Can you explain what this loop does and whether it is correct?") == "en"


@pytest.mark.parametrize(("text", "script", "language"), [
    ("Γεια σου, πώς μπορώ να αλλάξω τον κωδικό μου;", "greek", "el"),
    ("שלום, איך אני מאפס את הסיסמה שלי?", "hebrew", "he"),
    ("مرحبا، كيف يمكنني إعادة تعيين كلمة المرور؟", "arabic", "ar"),
    ("नमस्ते, मैं अपना पासवर्ड कैसे बदलूँ?", "devanagari", "und"),  # hi, mr, ne share it
    ("你好，我怎么重置密码？", "han", "zh"),
    ("パスワードをリセットするにはどうすればいいですか", "hiragana_katakana", "ja"),
    ("東京都千代田区丸の内一丁目の会議室で明日会議を行います", "han", "ja"),  # kanji-heavy, some kana
    ("비밀번호를 어떻게 재설정하나요?", "hangul", "ko"),
    ("สวัสดี ฉันจะรีเซ็ตรหัสผ่านได้อย่างไร", "thai", "th"),
    ("Բարև, ինչպես փոխել գաղտնաբառը", "other", "und"),  # Armenian
    ("გამარჯობა, როგორ შევცვალო პაროლი", "other", "und"),  # Georgian
    ("Ça coûte très cher à Zürich, n'est-ce pas ? Je veux savoir pourquoi.", "latin", "fr"),
    ("Ｈｅｌｌｏ ｗｏｒｌｄ", "latin", "und"),  # full-width Latin letters
    ("🙂🙂🙂 !!! 42", "none", "und"),
    ("", "none", "und"),
])
def test_scripts_and_the_languages_they_name(text: str, script: str, language: str) -> None:
    assert script_of(text) == script
    assert script_and_language(text) == (script, language)


def test_dominant_script_is_the_majority_of_letters_not_of_characters() -> None:
    assert script_of("Привет! Как дела? ok") == "cyrillic"
    assert script_of("Hello, how are you? Привет") == "latin"
    assert script_of("12345 ... Да") == "cyrillic"  # digits and punctuation do not vote


def test_only_the_head_is_read() -> None:
    text = "a" * HEAD_CHARS + "я" * 5_000
    assert script_of(text) == "latin"
    assert script_of("я" * HEAD_CHARS + "a" * 5_000) == "cyrillic"


def test_script_shortcut_for_accented_latin_agrees_with_counting() -> None:
    # Mostly-ASCII Latin text skips the per-code-point count; the answer must be the same.
    for text in [p for ps in PROMPTS.values() for p in ps] + ["É" * 10 + "a" * 3, "ü" * 30]:
        head = text[:HEAD_CHARS]
        expected = "none" if head.isascii() and not any(c.isalpha() for c in head) else None
        counted = textstats._dominant(textstats._script_counts(head))
        assert script_of(text) == (expected or counted)


def test_turkish_dotted_capital_i_does_not_split_words() -> None:
    assert language_of("İstanbul'a nasıl gidebilirim, bana yardım eder misin?") == "tr"


def test_language_survives_typographic_punctuation() -> None:
    assert language_of("Qu’est-ce que c’est ? « Je ne sais pas », dit-il — vraiment.") == "fr"
    assert language_of("¿Qué hora es? ¡Dímelo, por favor, que no tengo reloj!") == "es"


# --- n-gram hashes -----------------------------------------------------------------------------


def reference_ngram_hashes(text: str, n: int, dims: int, limit: int) -> list[int]:
    """The documented rule, spelled out in plain Python with the pure-Python hash."""
    padded = " " + " ".join(text[:NGRAM_CHARS].lower().split()) + " "
    if padded == "  ":
        return []
    grams = {padded[i:i + n] for i in range(len(padded) - n + 1)} or {padded}
    kept = sorted(ngram_hash(g) for g in grams)[:limit]
    return sorted({h % dims for h in kept})


def test_ngram_hashes_are_pinned() -> None:
    # Persisted references hold these indices: a change of hash is a breaking change.
    assert ngram_hash("abc") == 0x33EBAF9927CBC5BD
    assert ngram_hashes("Reset my password, please.", dims=1024, limit=8) == [
        169, 428, 443, 533, 633, 662, 698, 978]


def test_ngram_hashes_match_the_plain_python_rule() -> None:
    rng = random.Random(3)
    alphabet = "abcdefghij klmnop ÀÉß яжш 中文字 🙂𝔘 \t\n"
    texts = ["", "a", "ab", "hello world", "x" * 5_000, "ab " * 900]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 3_000))) for _ in range(25)]
    for text in texts:
        for n, limit in [(3, 256), (1, 16), (5, 64), (3, 4)]:
            assert ngram_hashes(text, n=n, dims=5_000, limit=limit) == reference_ngram_hashes(
                text, n, 5_000, limit), (text[:40], n, limit)


def test_ngram_hashes_are_bounded_sorted_distinct_and_in_range() -> None:
    text = " ".join(PROMPTS["en"]) * 5
    indices = ngram_hashes(text, dims=2**18, limit=256)
    assert 250 <= len(indices) <= 256
    assert indices == sorted(set(indices))
    assert all(0 <= i < 2**18 for i in indices)


def test_ngram_hashes_normalise_case_and_whitespace_and_read_only_the_head() -> None:
    assert ngram_hashes("Hello   World\n") == ngram_hashes("hello world")
    assert ngram_hashes("hello world") != ngram_hashes("hello word")
    head = "q" * NGRAM_CHARS
    assert ngram_hashes(head + " anything after the head") == ngram_hashes(head)


def test_ngram_hashes_are_the_same_in_another_process() -> None:
    text = "Wie kann ich mein Passwort zurücksetzen? 東京 🙂"
    code = ("from inferwatch.detectors.drift.textstats import ngram_hashes;"
            f"print(ngram_hashes({text!r}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(ngram_hashes(text))


@pytest.mark.parametrize("option", [{"n": 0}, {"dims": 0}, {"limit": 0}])
def test_ngram_hashes_reject_bad_options(option: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        ngram_hashes("text", **option)


def test_docstring_examples() -> None:
    result = doctest.testmod(textstats, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
