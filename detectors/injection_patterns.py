"""The pattern families of the prompt-injection detector, as data.

Each row is ``(family, pattern name, weight, anchors, regex)``. The regex is tried only where one
of the anchors (``|``-separated, or a tuple) occurs in the normalised text (lower case, single
spaces), and must match from there. Weights: a family scores its strongest pattern; strong
patterns (>= 0.5) fire alone, weak ones need company. See
:mod:`inferwatch.detectors.prompt_injection` for how they are applied.
"""

from __future__ import annotations

_AI = (r"(?:ai|a\.i\.|llms?|language models?|ai models?|assistants?|ai assistants?|chatbots?|bots?|gpt"
       r"|chatgpt|agents?|ai agents?|claude|gemini|bard|copilot)")
_AI_A = "ai|llm|llms|language model|assistant|chatbot|bot|gpt|chatgpt|agent|claude|gemini|bard|copilot"
_LIMITS = (r"(?:restrictions|limits|limitations|filters?|filtering|rules|guidelines|ethics|morals|boundaries"
           r"|censorship|constraints|policies|programming|safeguards|guardrails)")
_UNBOUND = (r"(?:unrestricted|unfiltered|uncensored|unlimited|unbound|unbounded|amoral|unethical|immoral"
            r"|lawless|rogue|limitless|unaligned|jailbroken)")
_UNBOUND_A = ("unrestricted|unfiltered|uncensored|unlimited|unbound|amoral|unethical|immoral|lawless|rogue"
              "|limitless|unaligned|jailbroken")
_FREE = r"(?:unrestricted|unfiltered|uncensored|unlimited|unbound|amoral|limitless|jailbroken)"
_FREE_A = "unrestricted|unfiltered|uncensored|unlimited|unbound|amoral|limitless|jailbroken"
_PRIOR = r"(?:previous|prior|above|preceding|earlier|former|foregoing|initial|original|old)"
_ORDERS = (r"(?:instructions?|rules|directions?|prompts?|guidelines|commands?|directives?|constraints"
           r"|restrictions|guidance|programming|orders)")
_BUILTIN = (r"(?:(?:safety|content|ethical|moral|system|built-in|internal|core|original|programmed|openai"
            r"|default) )")
_SAY = (r"(?:say|state|print|respond|output|write|reply|tell|answer|return|repeat|translate|give|claim"
        r"|insert|include|send|display)")
_IGNORE_A = "ignore|disregard|forget|skip|override|bypass|neglect|discard"
_SHOW = (r"(?:reveal|print|repeat|show|display|output|dump|leak|disclose|recite|spell out|write out|copy|echo"
         r"|tell me|give me|share|provide|send me|type out|list)")
_SHOW_A = ("reveal|print|repeat|show|display|output|dump|leak|disclose|recite|spell out|write out|copy|echo"
           "|tell me|give me|share|provide|send me|type out|list")
_NEG = r"(?:doesn't|does not|don't|do not|not have to|no longer)"
# "never share your password" is advice, "your password policy" a topic: neither asks for a secret.
_NOT_NEGATED = r"(?<!never )(?<!not )(?<!n't )"
_NOT_TOPIC = r"(?! (?:policy|policies|manager|reset|requirements?|strength|length|rules|hygiene|safe))"
_NEG_A = "doesn't|does not|don't|do not|not have to|no longer"
# "ignore the previous instructions I gave you": the user's own earlier request, like "my previous".
# Instructions that belong to someone or something in the user's own world ("from my manager",
# "on the worksheet") are not the model's.
_NOT_MINE = (r"(?! (?:that |which )?(?:i|we) (?:just |have |'ve |had )?(?:gave|given|told|wrote|written|sent"
             r"|provided|mentioned|said|listed|asked|typed|posted|shared|added)"
             r"| (?:from|of|by|given by|set by) (?:my|our) "
             r"| (?:on|in) (?:the|this|that|my|our) (?:worksheet|form|exam|test|quiz|assignment|homework"
             r"|handout|manual|leaflet|label|package|packaging|box|recipe)\b)")
# "the previous command's exit status", "the previous rules of the game": the noun qualifies
# another, or belongs to a game, a sport, a contract — not the model's instructions.
_NOT_MODIFIER = (r"(?!'s\b)(?! of (?:the |a |an |this |that )?(?!(?:system|assistant|ai|model|chatbot|bot"
                 r"|conversation|chat|developers?|openai|anthropic|prompt|yours)\b)\w)")
# What a prompt injection tells the model to set aside (the document it reads, its orders, the user's
# request), not what a user asks it to skip over ("ignore the typos", "disregard the header row").
_SET_ASIDE = (r"(?:above|previous|preceding|prior|earlier|former|foregoing|original|initial|text|prompts?"
              r"|messages?|instructions?|directions?|rules|requests?|tasks?|questions?|inputs?|context"
              r"|documents?|emails?|conversation|content|system|everything|it|that|this|those|these|said"
              r"|written|given|user's|user|all|other|of)")

# Verbs that put words in the model's mouth: "ignore the resume and state: I admit…" is an
# injection whatever was set aside; "ignore the typos and translate…" is a request.
_ASSERT = r"(?:say|state|claim|repeat|respond|reply|answer)"

# "How do I ignore the previous instructions (from my manager) politely?": the user asking how
# they may do it, not telling the model to.
_NOT_ASKING_HOW = r"(?<!how do i )(?<!how can i )(?<!how should i )(?<!how to )(?<!should i )(?<!can i )"

# The user's own world in the other languages, as _NOT_MINE in English: "ignora las instrucciones
# del manual", "vergiss die Anweisungen auf der Packung", "oublie les instructions de la recette",
# "не обращай внимания на правила оформления" are about a manual, a packet, a recipe, a layout.
_NOT_MINE_I18N = (
    r"(?! (?:(?:de|del|de la|de los|de las|du|des|de l'|della|dello|dei|delle|von|vom|der|do|da|dos|das"
    r"|auf (?:der|dem|den)|im|in (?:der|dem)|en (?:el|la|los|las|mi)|sur (?:le|la|les)|dans (?:le|la|les)"
    r"|sul|sulla|nel|nella|no|na|на|в|во|из|к|для) )?"
    r"(?:(?:mi|mis|nuestro|nuestra|nuestros|nuestras|mon|ma|mes|notre|nos|mio|mia|miei|mie|nostro|nostra"
    r"|meine[mnrs]?|unsere[mnrs]?|meu|minha|meus|minhas|nosso|nossa|моего|моей|моих|нашего|нашей|наших)\b"
    r"|(?:manual|manuel|manuale|handbuchs?|anleitung|bedienungsanleitung|paquete|envase|caja|emballage"
    r"|boîte|paquet|confezione|scatola|packung|verpackung|embalagem|caixa|receta|recette|ricetta|rezepts?"
    r"|receita|etiqueta|étiquette|etichetta|etikett|rótulo|examen|prüfung|esame|exame|formulario"
    r"|formulaire|formulars?|modulo|formulário|fabricante|fabricant|produttore|herstellers?|jefe|chef"
    r"|capo|profesor|professeur|professore|lehrers?|médico|médecin|medico|arztes|упаковк\w*|рецепт\w*"
    r"|экзамен\w*|оформлени\w*|производител\w*|руководств\w*)\b))"
)

# "Ignore / forget (all) (your | the) previous instructions" and "ignore everything you were told",
# in the languages users most often write in. A first-person possessive ("olvida mis instrucciones",
# "vergiss meine Anweisungen") is a user correcting themself, so only "your", "the" or none.
# Text is NFKC-normalised and lower-cased first: Thai sara am is "\u0e4d\u0e32", Turkish "i" may
# carry a combining dot (U+0307), Arabic may carry short-vowel marks.
_FORGET_I18N = [
    r"(?:ignora|ignore|ignorad|olvida|olvide|olvídate de|olvídese de|omite|descarta|haz caso omiso de)"
    r" (?:todas )?(?:las |tus |sus |esas |estas )?(?:instrucciones|reglas|indicaciones|órdenes)\b",
    r"(?:ignora|olvida|ignore|olvide) todo lo que (?:te|le) (?:han|hayan|habían) (?:dicho|indicado)",
    r"(?:ignore|ignora|esqueça|esquece|desconsidere|desconsidera) (?:todas )?(?:as )?(?:suas |tuas )?"
    r"(?:instruções|regras|orientações)\b",
    r"(?:ignore|esqueça|esquece) tudo (?:o )?que (?:te|lhe) (?:foi dito|disseram)",
    r"(?:ignorez|oublie|oubliez|ne tiens pas compte|ne tenez pas compte) (?:de )?(?:toutes )?"
    r"(?:les |tes |vos )?(?:instructions|consignes|règles)\b",
    # "ignore" is English too ("students often ignore instructions"): French only with its article.
    r"ignore (?:toutes )?(?:les |tes |vos )(?:instructions|consignes|règles)\b|ignore (?:consignes|règles)\b",
    r"(?:ignore|ignorez|oublie|oubliez) tout ce qu(?:e |')"
    r"(?:on t'a|on vous a|vous avez|tu as|t'a été|vous a été) ?(?:dit|reçu|donné)",
    r"(?:ignora|ignorate|dimentica|dimenticate|trascura|non considerare) (?:tutte )?(?:le )?(?:tue |sue )?"
    r"(?:istruzioni|regole|indicazioni)\b",
    r"(?:ignora|dimentica) tutto (?:ciò|quello) che ti è stato detto",
    r"(?:ignoriere|ignorier|ignorieren sie|vergiss|vergessen sie|missachte|missachten sie) (?:alle )?"
    r"(?:deine |ihre |die )?(?:vorherigen |bisherigen |vorigen |früheren )?"
    r"(?:anweisungen|regeln|instruktionen|befehle)\b",
    r"(?:ignoriere|vergiss) alles,? was (?:man )?dir (?:gesagt|vorher)",
    r"(?:игнорируй|игнорируйте|проигнорируй|забудь|забудьте|не обращай внимания на) (?:вс[её] )?"
    r"(?:свои |ваши |предыдущие |прежние )*(?:инструкции|указания|правила)",
    r"(?:игнорируй|забудь|забудьте) вс[её],? что (?:тебе|вам) (?:говорили|сказали)",
    r"(?:忽略|无视|忘记|忘掉|不要理会)(?:之前|以前|上面|上述|先前|前面|所有)?的?(?:指示|指令|规则|说明)",
    r"(?:以前|前|これまで)の(?:指示|命令|ルール)を(?:無視|忘れ)",
    r"(?:이전|앞의|기존)? ?(?:지시|지침|명령|규칙)(?:을|를|은|는)? (?:모두 )?(?:무시|잊어)",
    r"모든 (?:지시|지침|규칙)(?:을|를|은|는)? (?:무시|잊어)",
    r"(?:تجاهل|انس[\u064b-\u0652]*|تغاض[ىي] عن) (?:جميع |كل )?(?:ال)?تعليمات",
    r"(?:पिछले|पूर्व|पहले के) (?:सभी )?निर्देश[\u0900-\u097f]* (?:को )?(?:भूल|अनदेखा|नज़रअंदाज़|नजरअंदाज)",
    r"जो (?:भी|कुछ) (?:आपको|तुम्हें) (?:बताया|कहा) गया (?:है|था) (?:उसे )?(?:अनदेखा|भूल)",
    r"(?:আপনার )?(?:আগের|পূর্ববর্তী) (?:সব |সমস্ত )?নির্দেশ[\u0980-\u09ff]* (?:উপেক্ষা|ভুলে)",
    r"(?:bỏ qua|quên|phớt lờ) (?:đi )?(?:tất cả |mọi |những |các )*(?:hướng dẫn|chỉ dẫn|chỉ thị|quy tắc)",
    r"(?:abaikan|lupakan) (?:semua )?(?:instruksi|petunjuk|aturan)\b",
    r"(?:kalimutan|huwag pansinin|balewalain) (?:ang )?(?:lahat ng )?(?:iyong |mga )*(?:naunang |nakaraang )?"
    r"(?:tagubilin|instruksyon|panuto|utos)",
    "(?:\u0e2d\u0e22\u0e48\u0e32\u0e44\u0e1b\u0e2a\u0e19\u0e43\u0e08|\u0e44\u0e21\u0e48\u0e15\u0e49\u0e2d"
    "\u0e07\u0e2a\u0e19\u0e43\u0e08|\u0e25\u0e30\u0e40\u0e27\u0e49\u0e19|\u0e25\u0e37\u0e21)"
    "(?:\u0e04\u0e4d\u0e32\u0e41\u0e19\u0e30\u0e19\u0e4d\u0e32|\u0e04\u0e4d\u0e32\u0e2a\u0e31\u0e48\u0e07)",
    r"(?:önceki\u0307? )?(?:tali\u0307?matlar|kurallar)[\u0131i]\u0307? (?:yok say|görmezden gel|unut)",
]
_FORGET_I18N_A = (
    "ignora|ignore|ignorad|olvida|olvide|olvídate|olvídese|omite|descarta|haz|esqueça|esquece|desconsidere"
    "|desconsidera|ignorez|oublie|oubliez|ne|ignorate|dimentica|dimenticate|trascura|non|ignoriere|ignorier"
    "|ignorieren|vergiss|vergessen|missachte|missachten|игнор|проигнор|забуд|не обращай"
    "|忽略|无视|忘记|忘掉|不要理会|以前|前|これまで|이전|앞의|기존|지시|지침|명령|규칙|모든|تجاهل|انس|تغاض|पिछले|पूर्व|पहले|जो|আপনার|আগের|পূর্ববর্তী"
    "|bỏ qua|quên|phớt lờ|abaikan|lupakan|kalimutan|huwag|balewalain"
    "|\u0e2d\u0e22\u0e48\u0e32|\u0e44\u0e21\u0e48|\u0e25\u0e30\u0e40\u0e27\u0e49\u0e19|\u0e25\u0e37\u0e21"
    "|önceki|tali|kurallar"
)

# (family, pattern, weight, anchors, regex). The regex is tried only where one of the anchors ("|"-separated,
# or a tuple) occurs in the normalised text (lower case, single spaces), and must match from there.
PATTERNS: list[tuple[str, str, float, str | tuple[str, ...], str]] = [
    ("instruction_override", "ignore_previous", 0.8, _IGNORE_A,
     rf"{_NOT_ASKING_HOW}\b(?:{_IGNORE_A}) (?:(?!my )\w+ ){{0,4}}?{_PRIOR} (?:\w+ ){{0,2}}?{_ORDERS}\b"
     rf"{_NOT_MINE}{_NOT_MODIFIER}"
     rf"|\b(?:ignore|disregard|forget) (?:all |any |the |your )?(?:\w+ )?{_ORDERS}"
     rf" (?:\w+ ){{0,4}}?(?:before|previously|earlier|so far|until now)\b"),
    ("instruction_override", "ignore_above", 0.75, "ignore|disregard|forget",
     rf"\b(?:ignore|disregard|forget) (?:all |everything |what(?:ever)? (?:was |is )?(?:said|written) )?"
     rf"(?:of )?(?:the )?(?:above|before|previous|preceding)(?: {_SET_ASIDE})?[,.;:]? "
     rf"(?:and|then|now|instead),? "
     rf"(?:instead |just |only )?{_SAY}\b|\b(?:ignore|disregard|forget) (?:all|everything) (?:\w+ ){{0,4}}?"
     rf"(?:before|above|prior to) this\b"),
    # "Disregard everything you were told before", "forget all you've been given": not "forget everything
    # you were told about dieting", "... taught in school", "... by your doctor" (figures of speech, other
    # people's advice), nor "... I told you" (a user correcting themself).
    ("instruction_override", "forget_what_you_were_told", 0.7, "ignore|disregard|forget",
     r"\b(?:ignore|disregard|forget) (?:about )?(?:all|everything|anything|whatever|all that|all of what"
     r"|what) (?:that |which )?(?:you(?:'ve| have| had)? (?:been|were|was|got) (?:\w+ )?(?:told|given|taught"
     r"|instructed|programmed|trained|fed|shown)\b(?! about\b| (?:in|at) (?:school|class|college"
     r"|university)\b| by (?!(?:your |the |its )?(?:developers?|creators?|makers?|openai|anthropic"
     r"|system|admins?|operators?)\b))"
     r"|(?:was|were|has been|have been|had been) (?:\w+ )?(?:told|given|said|shown|written) to you\b)"),
    ("instruction_override", "ignore_content_and", 0.7, "ignore|disregard",
     rf"\b(?:ignore|disregard) (?:the|this|that|all|any|these) (?:(?:{_SET_ASIDE} ){{0,3}}?(?:and|then) "
     rf"(?:instead |just )?{_SAY}|(?:\w+ ){{0,3}}?(?:and|then) (?:instead |just )?{_ASSERT})\b"),
    ("instruction_override", "ignore_your_rules", 0.6, "ignore|disregard|forget|bypass|override",
     rf"\b(?:ignore|disregard|forget|bypass|override) (?:all (?:of )?)?(?:your |all |any |the {_BUILTIN}+)"
     rf"{_BUILTIN}*(?:instructions|programming|guidelines|rules|directives|restrictions|filters|policies"
     rf"|training)\b"),
    ("instruction_override", "dont_follow", 0.7, "do not|don't|dont|stop|no longer|never",
     r"\b(?:do not|don't|dont|stop|no longer|never) (?:follow|obey|adhere to|comply with|listen to) "
     r"(?:\w+ ){0,2}?(?:previous|prior|original|system|your|openai's|openai) (?:\w+ ){0,2}?"
     r"(?:instructions|rules|guidelines|programming|policies|policy|directives|prompt)\b"),
    ("instruction_override", "regardless_previous", 0.6, "regardless|despite|notwithstanding|instead of",
     rf"\b(?:regardless of|despite|notwithstanding|instead of following) (?:any |all |the |your )?{_PRIOR} "
     r"(?:\w+ )?(?:instructions|rules|tasks|guidelines|directions|prompts?|directives)\b"),
    ("instruction_override", "new_instructions", 0.6, "new|updated|revised|real|actual|secret|additional",
     r"\b(?:new|updated|revised|real|actual|secret|additional) (?:system )?instructions? ?:"),
    ("instruction_override", "override_mode", 0.5,
     "security|safety|admin|developer|debug|maintenance|god|sudo|override mode",
     r"\b(?:(?:security|safety|admin|developer|debug|maintenance|god|sudo)(?: training data)? override"
     r"|override mode)\b"),
    ("instruction_override", "authority_claim", 0.35, "i am|i'm",
     r"\b(?:i am|i'm) (?:your (?:\w+ )?(?:developer|creator|administrator|admin|owner|programmer|maker"
     r"|master)|god)\b"),
    ("instruction_override", "from_now_on", 0.25, "from now on",
     r"\bfrom now on,? you (?:are|will|must|shall)\b"),
    ("instruction_override", "multilingual", 0.8,
     "ignore|ignora|ignorar|ignorer|ignorez|ignorare|ignorate|ignoriere|ignorieren|ignorier|olvida|vergiss"
     "|oublie|oubliez|dimentica|игнор|забуд|忽略|以前|前|上記|이전|تجاهل|αγνοήστε|bỏ qua|abaikan"
     "|önceki|पिछले",
     r"ignor\w* (?:\w+ ){0,2}?(?:instrucciones|instructions|istruzioni|instruções|anweisungen)"
     r" (?:anteriores|previas|précédentes|precedentes|antérieures|precedenti)"
     r"|ignor\w* (?:sie )?(?:alle )?(?:vorherigen|bisherigen|vorigen) anweisungen"
     r"|ignora(?:te)? quanto (?:sopra|detto)|ignorez? (?:tout )?ce qui précède"
     r"|(?:olvida|vergiss|oubliez?|dimentica) (?:\w+ ){0,2}?(?:instrucciones|anweisungen|instructions"
     rf"|istruzioni)\b{_NOT_MINE_I18N}"
     r"|(?:игнорир|забуд)\w* (?:\w+ )?(?:предыдущ|прежн|вышеуказ)\w* (?:инструкц|указан)"
     r"|忽略(?:之前|以前|上面|上述|先前|前面|所有)|(?:以前|前|上記)の指示を無視|上記を?無視|이전 지시"
     r"|تجاهل (?:جميع )?(?:ال)?تعليمات (?:ال)?سابقة|αγνοήστε (?:τις |τ )?προηγούμενες οδηγίες"
     r"|bỏ qua (?:các |mọi )?(?:hướng dẫn|chỉ dẫn|chỉ thị) trước|abaikan (?:semua )?instruksi sebelumnya"
     "|önceki talimatlar\u0131 (?:yok say|görmezden gel|unut)|पिछले निर्देशों को (?:अनदेखा|नज़रअंदाज़|नजरअंदाज)"),
    ("instruction_override", "multilingual_forget", 0.75, _FORGET_I18N_A,
     "(?:" + "|".join(_FORGET_I18N) + ")" + _NOT_MINE_I18N),
    ("system_prompt_extraction", "reveal_system_prompt", 0.75, _SHOW_A,
     rf"\b{_SHOW} (?:me |us )?(?:all |back |out )?(?:of )?(?:your|the|its) "
     r"(?:(?:full|entire|exact|complete|verbatim|current|first) )*(?:system (?:prompt|message|instructions)"
     r"|(?:initial|original|hidden|secret|developer|internal|pre-?) ?(?:prompt|instructions|directives))\b"),
    ("system_prompt_extraction", "what_is_your_prompt", 0.65, "what",
     r"\bwhat (?:is|are|was|were) your "
     r"(?:(?:exact|full|original|initial|first|hidden|secret|system|current) )*"
     r"(?:system prompt|prompt|instructions|directives)\b(?! (?:for|on|about) \w+ing\b)"),
    ("system_prompt_extraction", "repeat_text_above", 0.6,
     "repeat|print|output|reveal|write|show|copy|recite|display|echo|starting|beginning",
     r"\b(?:repeat|print|output|reveal|write|show|copy|recite|display|echo) (?:back )?"
     r"(?:all |everything |the )?(?:of the )?(?:(?:text|words|content|sentences|lines|messages?|instructions"
     r"|prompt) )?(?:above|before this|prior to this)\b"
     "|\\b(?:starting|beginning) with (?:the (?:words|phrase) )?[\"'\u201c]?you are\\b"),
    ("system_prompt_extraction", "your_system_prompt", 0.4, "your",
     r"\byour (?:system prompt|(?:initial|system|hidden|original) instructions|pre-?prompt)\b"),
    ("system_prompt_extraction", "your_secret", 0.55,
     "tell|give|share|confirm|reveal|provide|send|show|spell|disclose|leak|print|output|type|write|what",
     rf"{_NOT_NEGATED}\b(?:tell|give|share|confirm|reveal|provide|send|show|spell|disclose|leak|print|output"
     r"|type|write|what(?:'s| is| was)) (?:me |us )?(?:\w+ ){0,3}?your (?:\w+ )?(?:password|passcode"
     rf"|passphrase|secret (?:key|code|word|phrase)|api key|access key|credentials)\b{_NOT_TOPIC}"),
    ("system_prompt_extraction", "the_secret", 0.45,
     "what|tell me|give me|reveal|share|confirm|disclose|leak|provide",
     rf"{_NOT_NEGATED}\b(?:what(?:'s| is)|tell me|give me|reveal|share|confirm|disclose|leak|provide) the "
     rf"(?:\w+ )?(?:password|passcode|passphrase|secret (?:key|code|word|phrase)|api key|access key)\b"
     rf"{_NOT_TOPIC}"),
    ("roleplay_jailbreak", "dan", 0.8, "you are|you're|act as|acting as|pretend to be|called|named|dan",
     r"\b(?:you are|you're|act as|acting as|pretend to be|called|named)(?: now)? (?:a |an |the )?"
     r"(?:dan|betterdan|anti-dan|ucar|mongo tom)\b|\bdan \(do anything now\)"),
    ("roleplay_jailbreak", "do_anything_now", 0.8, "do anything now", r"\bdo anything now\b"),
    ("roleplay_jailbreak", "developer_mode_ai", 0.7, f"{_AI_A}|developer mode|simulate",
     rf"\b{_AI} with developer mode\b|\bdeveloper mode (?:output|response)\b|\bsimulate developer mode\b"),
    ("roleplay_jailbreak", "developer_mode", 0.35, "developer mode", r"\bdeveloper mode\b"),
    ("roleplay_jailbreak", "jailbroken_persona", 0.7, "you|act|jailbreak|jailbroken|[\U0001f513",
     r"\b(?:you are|you're|act as) (?:now )?(?:a |an )?jailbr(?:oken|eak)\b|\bjailbreak mode\b"
     rf"|\bjailbroken (?:mode|version|{_AI})\b|\[\U0001f513"),
    ("roleplay_jailbreak", "jailbreak", 0.35, "jailbroken|jailbreak|jailbreaking|jailbreaks",
     r"\bjailbr(?:oken|eak(?:ing|s)?)\b"),
    ("roleplay_jailbreak", "unrestricted_ai", 0.7,
     f"act|behave|respond|answer|function|operate|roleplay|role-play|pose|{_UNBOUND_A}",
     r"\b(?:act|behave|respond|answer|function|operate|roleplay|role-play|pose) (?:as|like) (?:an? |the )?"
     rf"(?:\w+ ){{0,2}}?{_UNBOUND} (?:\w+ ){{0,2}}?(?:{_AI}|version|entity|intelligence)\b"
     rf"|\b{_UNBOUND} {_AI}\b"),
    ("roleplay_jailbreak", "unbound_traits", 0.6, _FREE_A, rf"\b({_FREE})\b[^.]{{0,40}}?\b(?!\1\b){_FREE}\b"),
    ("roleplay_jailbreak", "ai_without_limits", 0.65, _AI_A,
     rf"\b{_AI} (?:\w+ ){{0,3}}?(?:has no|have no|with no|without any|without|free (?:of|from)|not bound by"
     rf"|unbound by|doesn't have any|does not have any) (?:\w+ ){{0,2}}?{_LIMITS}\b"),
    ("roleplay_jailbreak", "not_bound_by", 0.45, "not|never|no longer",
     r"\b(?:not|never|no longer) (?:be )?(?:bound|restricted|limited|constrained) by "
     r"(?:any |the |its |your )?"
     rf"(?:\w+ ){{0,2}}?{_LIMITS}"),
    ("roleplay_jailbreak", "pretend_no_limits", 0.7, "pretend",
     r"\bpretend (?:that )?(?:you |to )?(?:have|has|had|are|were|be) (?:no|zero|not bound by"
     rf"|free (?:of|from)|without(?: any)?|released from|freed from|beyond) (?:\w+ ){{0,2}}?{_LIMITS}\b"
     rf"|\bpretend (?:that )?(?:you |to )?(?:are|were|be) (?:an? )?{_UNBOUND}\b"),
    ("roleplay_jailbreak", "content_policy", 0.6,
     f"bypass|break|ignore|violate|disregard|circumvent|evade|free from|not bound|not restricted|{_NEG_A}",
     r"\b(?:bypass|break|ignore|violate|disregard|circumvent|evade|free from|not bound by|not restricted by"
     rf"|{_NEG} (?:follow|abide by|adhere to|need to follow)) (?:\w+ ){{0,2}}?(?:openai|open ai|anthropic"
     "|chat ?gpt)(?:'s|\u2019s)? (?:\\w+ ){0,2}?(?:policy|policies|guidelines|rules|restrictions|filters"
     "|terms)\\b"),
    ("roleplay_jailbreak", "no_ethics", 0.45,
     "no|without|free of|free from|not bound|doesn't|does not|don't|do not|never|unbound",
     r"\b(?:no|without|free of|free from|not bound by|(?:doesn't|does not|don't|do not|never) cares? about"
     r"|unbound by) (?:any )?(?:\w+ )?(?:ethics|morals|morality|(?:ethical|moral) (?:guidelines|constraints"
     r"|boundaries|restrictions|principles|limits|compass)|content (?:filters?|restrictions|polic(?:y|ies)"
     r"|moderation)|censorship|safety (?:filters?|guidelines|restrictions|measures|protocols))\b"
     r"|\bwithout (?:any )?regard (?:for|to) (?:\w+ ){0,2}?"
     r"(?:ethics|morals|morality|legality|laws?|safety)\b"),
    ("roleplay_jailbreak", "broken_free", 0.6, "broken|break|breaking|freed|released|liberated",
     r"\b(?:broken|break|breaking|freed|released|liberated) (?:free )?(?:of|from) (?:\w+ ){0,3}?"
     r"(?:confines|shackles|chains)\b"),
    ("roleplay_jailbreak", "never_refuse", 0.45,
     "never|won't ever|will never|cannot|can't|must not|mustn't|shall not",
     r"\b(?:never|won't ever|will never|cannot|can't|must not|mustn't|shall not) (?:ever )?"
     r"(?:refuses?\b|(?:decline|reject) (?:to answer|to respond|a request|any request|anything|my request"
     r"|any question|to do)\b)"),
    ("roleplay_jailbreak", "no_matter_how_harmful", 0.4, "no matter|regardless of|even if",
     r"\b(?:no matter (?:how|what|if|whether)|regardless of (?:how|whether|if)|even if (?:it(?:'s| is| was)?"
     r"|they are|the (?:request|question|answer|content) is)) (?:\w+ ){0,3}?(?:immoral|unethical|illegal"
     r"|harmful|dangerous|offensive|inappropriate|explicit)\b"),
    ("roleplay_jailbreak", "doesnt_care_about_rules", 0.4,
     "does not|doesn't|do not|don't|never|will not|won't",
     r"\b(?:does not|doesn't|do not|don't|never|will not|won't) cares? (?:\w+ )?about (?:\w+ ){0,2}?"
     r"(?:rules|laws|ethics|morals|morality|legality|consequences|guidelines|policies|safety|restrictions"
     r"|openai)\b"),
    ("roleplay_jailbreak", "break_character_threat", 0.4, "if|when|whenever|break|breaking",
     r"\b(?:if|when|whenever) you (?:ever )?(?:break|are breaking|start breaking|slip out of) (?:of )?"
     r"character\b"
     r"|\bbreak(?:ing)? (?:of )?character,? i (?:will|'ll)\b"),
    ("roleplay_jailbreak", "always_answer", 0.3, "you|it|he|she",
     r"\b(?:you|it|he|she) (?:will|must|shall|should|can) always (?:answer|respond|reply|comply|provide)\b"),
    ("roleplay_jailbreak", "dual_response", 0.4, "two|2",
     r"\b(?:two|2) (?:different |separate |distinct )?(?:ways|responses|answers|replies)\b[^.]{0,80}?"
     r"\b(?:normal(?:ly)?|classic|standard|usual|regular)\b"),
    ("roleplay_jailbreak", "no_refusal_phrases", 0.45, "never|not|don't|won't",
     r"\b(?:never|not|don't|won't|will not) (?:\w+ ){0,3}?(?:say|mention|remind|use|include|respond with|add)"
     r" (?:\w+ ){0,3}?[\"'\u201c]?(?:as an ai language model|i'm sorry|i am sorry|i apologi[sz]e"
     r"|i cannot|i can't)\b"),
    ("roleplay_jailbreak", "stay_in_character", 0.25, "stay|remain",
     r"\b(?:stay|remain|staying) in character\b"),
    ("roleplay_jailbreak", "aim", 0.8, "always intelligent", r"\balways intelligent and machiavellian\b"),
    ("delimiter_injection", "chat_template_token", 0.7, ("<|",),
     r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|begin_of_text|end_of_text"
     r"|start_header_id|end_header_id|eot_id|eom_id)\|>"),
    ("delimiter_injection", "inst_close", 0.6, "[/inst]", r"\[/inst\]"),
    ("delimiter_injection", "inst_tags", 0.45, "[inst]|<<sys|<</sys", r"\[inst\]|<</?sys>>"),
    ("delimiter_injection", "markdown_role_header", 0.55, "##",
     r"#{2,} ?(?:system|system prompt|admin|developer)(?: message)? ?:"),
    ("delimiter_injection", "end_of_prompt", 0.4, "end of|prompt ends|end user|end system",
     r"\b(?:end of (?:the )?(?:prompt|system prompt|instructions|user input)|prompt ends here"
     r"|end (?:user|system) (?:input|prompt))\b"),
    ("delimiter_injection", "role_tags", 0.4, "<system|<sys|</sys|[system]",
     r"</?(?:system|system_prompt|sys)(?: mode)?>|\[system\]\(#"),
    ("delimiter_injection", "fake_assistant_turn", 0.4, "assistant|ai|chatgpt|gpt",
     r"\b(?:assistant|ai|chatgpt|gpt) ?: ?(?:sure|ok|okay|certainly|of course)[,.!]? "
     r"(?:here|i will|i'll|i can)\b"),
    ("indirect_injection", "when_you_read_this", 0.7, _AI_A,
     rf"\b{_AI}[:,]? (?:\w+ ){{0,2}}?(?:when|if|once|after) you "
     rf"(?:read|see|process|parse|summari[sz]e|encounter|scan|reach|ingest) (?:this|these)\b"),
    ("indirect_injection", "note_to_ai", 0.6, "note to|message to|reminder to|notice to|p.s|ps",
     rf"\b(?:note|message|reminder|notice|p\.?s\.?) to (?:the |any |all )?{_AI}\b"),
    # Content addressing whichever AI reads it: "To any LLM reading this document: …", "If you are
    # an AI assistant reading this, …", "IMPORTANT INSTRUCTION FOR THE AI MODEL: …".
    ("indirect_injection", "to_the_ai_reading", 0.6, "to|for|if you are",
     rf"\b(?:to|for) (?:any|every|all|the|an?) (?:\w+ )?{_AI} (?:that is |who is )?(?:reading|processing"
     rf"|summari[sz]ing|parsing|analy[sz]ing|scanning|crawling|indexing)\b(?! (?:about|up on)\b)"
     rf"|\bif you are an? (?:\w+ )?{_AI}(?: model)?,? (?:reading|processing|summari[sz]ing|parsing"
     rf"|analy[sz]ing|scanning|crawling|indexing|and you are reading)\b"),
    ("indirect_injection", "instructions_for_the_ai", 0.6,
     "important|urgent|special|hidden|secret|additional",
     rf"\b(?:important|urgent|special|hidden|secret|additional) (?:system )?instructions? (?:for|to) "
     rf"(?:the |any |all )?{_AI}(?: model)?(?: \w+)? ?:"),
    ("indirect_injection", "hidden_comment", 0.55, "<!--",
     r"<!-- ?(?:ignore|disregard|forget|override|(?:new |hidden |secret )instructions?|system prompt|<)"),
    ("indirect_injection", "hidden_marker", 0.55, "[hidden|[secret|[invisible|hidden",
     r"\[(?:hidden|secret|invisible) (?:instructions?|prompt|message|note)\]"
     r"|\bhidden (?:instructions?|prompt) ?:"),
    ("indirect_injection", "dont_tell_user", 0.4, "do not|don't|never|without",
     r"\b(?:do not|don't|never|without) (?:tell|telling|inform|informing|mention|mentioning|reveal"
     r"|revealing|notify|notifying|let) (?:the |this )?(?:user|human|reader)\b"),
]
