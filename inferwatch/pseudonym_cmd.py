"""``inferwatch pseudonym``: from an API key (or user id) to the caller's pseudonym and back.

The agent writes a caller as ``p_`` and 24 hex digits of HMAC-SHA256 of its credential under
``agent.hmac_key`` (:class:`~inferwatch.agent.principal.Pseudonymizer`). Whoever holds that key
and the list of issued keys can find the key behind a pseudonym, with the settings every other
command reads (``--config``, ``INFERWATCH_CONFIG``, ``INFERWATCH_AGENT__HMAC_KEY``):

* ``inferwatch pseudonym < keys.txt``: each key's pseudonym, one a line, in order;
* ``inferwatch pseudonym --find p_… [FILE|-]``: the keys of FILE (stdin by default) whose
  pseudonym is that one, or starts with it when it was copied short;
* ``inferwatch pseudonym --fingerprint [FILE|-]``: the placeholder the agent writes for each
  candidate secret (``[SECRET:private_key:#1a2b3c4d]``), to confirm which one leaked.

Keys are read one a line, so they stay out of shell history; keys given as arguments are taken
with a warning. The HMAC key is never printed, and neither is a secret's value.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import IO, Any, cast

from inferwatch import render
from inferwatch.collectors.ids import PSEUDONYM, cut_short_pseudonym
from inferwatch.collectors.settings import DEFAULT_HMAC_KEY, Settings

_PREFIX = "inferwatch pseudonym"


def add_parser(sub: Any) -> None:
    """Add ``pseudonym`` to the ``inferwatch`` sub-command parsers."""
    p = sub.add_parser(
        "pseudonym",
        help="a key's pseudonym p_…, the keys behind a pseudonym (--find), a secret's fingerprint",
        description="Pseudonymise API keys or user ids as the agent does (agent.hmac_key from --config, "
                    "INFERWATCH_CONFIG or INFERWATCH_AGENT__HMAC_KEY), find which of a list of keys a "
                    "pseudonym belongs to, or print the placeholder the agent writes for a candidate "
                    "secret. Keys are read one per line from stdin or FILE: keys given as arguments "
                    "stay in your shell history.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML settings file (also INFERWATCH_CONFIG)")
    p.add_argument("--json", action="store_true", help="print JSON, one object per line")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--find", metavar="P",
                      help="print the keys whose pseudonym is P (p_… or principal:p_…; a pseudonym cut "
                           "short matches every key whose pseudonym starts with it); reads FILE or stdin")
    mode.add_argument("--fingerprint", action="store_true",
                      help="print the placeholder the agent writes for each candidate secret (one per line; "
                           "a private key block whole), to compare with an incident's [SECRET:…:#…]")
    p.add_argument("items", nargs="*", metavar="KEY|FILE",
                   help="keys to pseudonymise (default: read from stdin, one per line); with --find or "
                        "--fingerprint, the file to read (- or nothing: stdin)")
    p.set_defaults(handler=pseudonym)


def pseudonym(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``inferwatch pseudonym`` (see the module docstring)."""
    if args.fingerprint:
        return _fingerprints(args)
    from inferwatch.agent.principal import Pseudonymizer

    key = settings.agent.hmac_key
    if key.get_secret_value() == DEFAULT_HMAC_KEY:
        _note("agent.hmac_key is the public default: these are the pseudonyms of agents run without "
              "a key of their own (set INFERWATCH_AGENT__HMAC_KEY, or --config, as your agents do)")
    of = Pseudonymizer(key).pseudonym
    if args.find is not None:
        return _find(args, of)
    if args.items and args.items != ["-"]:
        _note("keys given as arguments stay in your shell history and show in the process list: "
              "read them from a file instead (inferwatch pseudonym < keys.txt)")
        for item in args.items:
            if os.path.isfile(item):
                _note(f"{item!r} is taken as a key, but it is also a file: to pseudonymise the keys in it, "
                      f"inferwatch pseudonym < {item}")
        lines: Iterator[tuple[int, str]] = enumerate(args.items, start=1)
    else:
        lines = _lines(_open("-"), "keys")
    count = 0
    for number, credential in lines:
        count += 1
        if args.json:
            render.json_line({"line": number, "pseudonym": of(credential)})
        else:
            print(of(credential))
    if not count:
        _note("no key read: give the keys one per line on stdin")
        return 2
    return 0


def _find(args: argparse.Namespace, of: Any) -> int:
    wanted = args.find.strip().removeprefix("principal:").lower()
    short = cut_short_pseudonym(wanted)
    if not short and PSEUDONYM.fullmatch(wanted) is None:
        _note(f"--find {args.find!r} is not a pseudonym: p_ and 24 hex digits (p_5f0c2a9e41d7b3c8a6e1f024), "
              "or the start of one")
        return 2
    source = _source(args.items)
    if source is None:
        return 2
    found = read = 0
    for number, credential in _lines(source, "keys"):
        read += 1
        name = of(credential)
        if name == wanted or (short and name.startswith(wanted)):
            found += 1
            if args.json:
                render.json_line({"line": number, "pseudonym": name, "key": credential})
            else:
                print(f"{name}  {credential}")
    if short:
        _note(f"{wanted} is cut short ({len(wanted) - 2} of 24 hex digits): every key whose pseudonym "
              f"starts with it is listed ({found} of {read:,})")
    if not found:
        _note(f"none of the {read:,} keys read has pseudonym {wanted}: is the list complete, and is "
              "agent.hmac_key the one of the agent that recorded it?")
        return 1
    return 0


def _fingerprints(args: argparse.Namespace) -> int:
    from inferwatch.collectors.redaction import SECRET_PLACEHOLDER, redact, secret_placeholder

    source = _source(args.items)
    if source is None:
        return 2
    count = 0
    for number, candidate in _candidates(_lines(source, "candidates")):
        count += 1
        placeholder = redact(candidate)
        found = SECRET_PLACEHOLDER.fullmatch(placeholder)
        if found is None:  # not a secret redaction knows alone on a line: the generic rule
            placeholder = secret_placeholder(None, candidate)
            found = SECRET_PLACEHOLDER.fullmatch(placeholder)
        ident = found.group("ident") if found is not None else None
        if args.json:
            fingerprint = ident if ident and ident.startswith("#") else None
            render.json_line({"line": number, "placeholder": placeholder, "fingerprint": fingerprint})
        else:
            print(placeholder)
        if ident is None:
            _note(f"line {number}: the agent writes no fingerprint or excerpt for such a value (a password, "
                  "a Basic credential, a short or word-like token): nothing to compare")
    if not count:
        _note("no candidate read: give the secrets one per line (a private key block whole)")
        return 2
    return 0


def _candidates(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """One candidate a line, except a private key block, which is one from BEGIN to END."""
    block: list[str] = []
    start = 0
    for number, line in lines:
        if block:
            block.append(line)
            if line.startswith("-----END"):
                yield start, "\n".join(block)
                block = []
        elif line.startswith("-----BEGIN") and "PRIVATE KEY" in line:
            block, start = [line], number
        else:
            yield number, line
    if block:
        yield start, "\n".join(block)


def _source(items: list[str]) -> IO[Any] | None:
    if len(items) > 1:
        _note(f"one file to read, not {len(items)}: {' '.join(items[:3])}{' …' if len(items) > 3 else ''}")
        return None
    try:
        return _open(items[0] if items else "-")
    except OSError as exc:
        _note(f"cannot read {items[0]}: {exc.strerror or exc}")
        return None


def _open(path: str) -> IO[Any]:
    if path == "-":
        if sys.stdin.isatty():
            _note("reading from the terminal, one per line; end with Ctrl-D")
        return cast("IO[Any]", getattr(sys.stdin, "buffer", sys.stdin))  # bytes; text under a test
    return open(path, "rb")  # closed by _lines


def _lines(source: IO[Any], what: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines, stripped as the agent strips a header's value, with their numbers."""
    with source:
        for number, raw in enumerate(source, start=1):
            if isinstance(raw, bytes):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    _note(f"line {number}: not UTF-8, skipped")
                    continue
            else:
                line = raw
            line = line.strip()
            if line:
                yield number, line


def _note(message: str) -> None:
    print(f"{_PREFIX}: {message}", file=sys.stderr)
