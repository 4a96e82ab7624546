import json
from datetime import timedelta

import pytest

from inferwatch.cli import build_parser, main


@pytest.fixture
def store(capsys, events_file, tmp_path):
    path = tmp_path / "store.db"
    assert main(["replay", str(events_file), "--store", str(path)]) == 0
    capsys.readouterr()
    return str(path)


def _json_lines(capsys) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_list_filters(capsys, store):
    main(["incidents", "list", "--store", store, "--json"])
    everything = _json_lines(capsys)
    main(["incidents", "list", "--store", store, "--kind", "drift", "--json"])
    drift = _json_lines(capsys)
    assert drift
    assert all(i["kind"] == "drift" for i in drift)
    assert len(drift) < len(everything)
    main(["incidents", "list", "--store", store, "--detector", "prompt_injection", "--json"])
    assert [i["subject"] for i in _json_lines(capsys)] == ["principal:p_mallory"]
    main(["incidents", "list", "--store", store, "--since", "2h", "--json"])
    captured = capsys.readouterr()
    assert captured.out == ""  # the incidents happened in January (event time) ...
    assert "but the newest matching incident is from 2026-01-01T" in captured.err  # ... and it says so
    assert "pass an earlier --since" in captured.err


def test_show_ack_resolve(capsys, store):
    main(["incidents", "list", "--store", store, "--detector", "request_rate", "--json"])
    incident = _json_lines(capsys)[0]
    assert main(["incidents", "show", incident["id"][:8], "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "principal:p_flooder" in shown
    assert incident["count"] == 1
    assert f"score: {incident['score']:.2f}" in shown
    assert "evidence:" in shown
    assert main(["incidents", "ack", incident["id"], "--store", store, "--actor", "alice",
                 "--note", "looking"]) == 0
    assert "acknowledged" in capsys.readouterr().out
    assert main(["incidents", "resolve", incident["id"], "--store", store, "--actor", "alice"]) == 0
    capsys.readouterr()
    main(["incidents", "show", incident["id"], "--store", store, "--json"])
    shown = _json_lines(capsys)[0]
    assert shown["status"] == "resolved"
    assert [h["action"] for h in shown["history"]][-2:] == ["acknowledged", "resolved"]
    assert shown["history"][-2]["note"] == "looking"
    main(["incidents", "list", "--store", store, "--status", "resolved", "--json"])
    assert [i["id"] for i in _json_lines(capsys)] == [incident["id"]]
    # resolving what is resolved changes nothing and is no error (a script resolving a list, two
    # people at once); acknowledging it still is one
    assert main(["incidents", "resolve", incident["id"], "--store", store, "--actor", "bob"]) == 0
    assert f"incident {incident['id']} is already resolved (by alice at " in capsys.readouterr().out
    main(["incidents", "show", incident["id"], "--store", store, "--json"])
    assert [h["action"] for h in _json_lines(capsys)[0]["history"]][-1:] == ["resolved"]
    assert [h["actor"] for h in shown["history"]][-1] == "alice"
    assert main(["incidents", "ack", incident["id"][:4], "--store", store]) == 2
    assert (f"incident {incident['id']} is resolved; cannot mark it acknowledged: reopen it first "
            f"(`inferwatch incidents reopen {incident['id']}`)") in capsys.readouterr().err


def test_reopen_and_note(capsys, store):
    main(["incidents", "list", "--store", store, "--detector", "request_rate", "--json"])
    incident = _json_lines(capsys)[0]
    ident = incident["id"]
    assert main(["incidents", "resolve", ident, "--store", store, "--actor", "alice"]) == 0
    capsys.readouterr()
    assert main(["incidents", "report", ident, "--store", store]) == 0
    assert f"Not over after all: `inferwatch incidents reopen {ident} --note" in capsys.readouterr().out
    assert main(["incidents", "reopen", ident[:6], "--store", store, "--actor", "bob",
                 "--note", "still flooding"]) == 0
    assert f"incident {ident} is now open (by bob)" in capsys.readouterr().out
    assert main(["incidents", "reopen", ident, "--store", store, "--actor", "bob"]) == 0
    assert f"incident {ident} is already open (by bob at " in capsys.readouterr().out
    assert main(["incidents", "note", ident, "--store", store, "--actor", "carol",
                 "--note", "blocked the key at the gateway"]) == 0
    assert f"note added to incident {ident} (by carol); it is still open" in capsys.readouterr().out
    main(["incidents", "show", ident, "--store", store, "--json"])
    shown = _json_lines(capsys)[0]
    assert shown["status"] == "open"
    assert [(h["action"], h["actor"], h["note"]) for h in shown["history"]][-3:] == [
        ("resolved", "alice", None), ("reopened", "bob", "still flooding"),
        ("noted", "carol", "blocked the key at the gateway")]
    with pytest.raises(SystemExit):
        main(["incidents", "note", ident, "--store", store])  # a note needs its text
    assert "the following arguments are required: --note" in capsys.readouterr().err


@pytest.mark.parametrize(("typed", "meant"), [
    ("unresolve", "reopen"), ("unack", "reopen"), ("reopne", "reopen"),
    ("close", "resolve"), ("comment", "note")])
def test_a_lifecycle_word_is_never_answered_with_its_opposite(capsys, typed, meant):
    with pytest.raises(SystemExit):
        main(["incidents", typed, "abcd"])
    err = capsys.readouterr().err
    assert f"did you mean {meant!r}?" in err


def test_a_negated_command_gets_no_guess_rather_than_the_command_it_negates(capsys):
    with pytest.raises(SystemExit):
        main(["incidents", "unresolved", "abcd"])
    assert "did you mean" not in capsys.readouterr().err


def test_errors_are_clear(capsys, store):
    assert main(["incidents", "show", "doesnotexist", "--store", store]) == 1
    assert "no incident with id" in capsys.readouterr().err
    assert main(["incidents", "resolve", "doesnotexist", "--store", store]) == 1
    assert "no incident with id" in capsys.readouterr().err
    assert main(["incidents", "show", "12", "--store", store]) == 1
    assert "an id prefix needs at least 4 characters" in capsys.readouterr().err


def test_a_pseudonym_cut_short_is_named_when_nothing_matches(capsys, store):
    assert main(["events", "search", "--store", store, "--principal", "p_0000000004"]) == 0
    assert "a pseudonym is p_ and 24 hex digits; 'p_0000000004' has 10 (cut short?" in capsys.readouterr().err
    main(["events", "search", "--store", store, "--principal", "p_flooder"])  # not hex: no such note
    assert "cut short" not in capsys.readouterr().err


def test_events_search_by_text_and_time(capsys, store):
    main(["events", "search", "--store", store, "--text", "previous instructions", "--json"])
    found = _json_lines(capsys)
    assert [e["principal"] for e in found] == ["p_mallory"]
    main(["events", "search", "--store", store, "--principal", "p_flooder", "--since",
          "2026-01-01T00:20:10Z", "--until", "2026-01-01T00:20:20Z", "--json"])
    window = _json_lines(capsys)
    assert window
    assert all("00:20:1" in e["time"] for e in window)
    main(["events", "search", "--store", store, "--principal", "p_flooder", "--since", "1d"])
    captured = capsys.readouterr()
    assert captured.out == "no events\n"
    assert "no event since" in captured.err
    assert "the newest matching event is from 2026-01-01T00:" in captured.err
    main(["events", "search", "--store", store, "--principal", "nobody", "--since", "1d"])
    assert capsys.readouterr().err == ""  # nothing older either: nothing to say
    main(["events", "search", "--store", store, "--principal", "p_flooder", "--limit", "3"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("TIME (UTC)")
    assert len(table) == 4


def test_bad_settings_exit_2_naming_the_variable(capsys, monkeypatch, store):
    monkeypatch.setenv("INFERWATCH_DETECT__WINDOW_S", "zero")
    assert main(["incidents", "list", "--store", store]) == 2
    assert "INFERWATCH_DETECT__WINDOW_S" in capsys.readouterr().err


def test_unknown_detector_is_named(capsys, monkeypatch, events_file):
    monkeypatch.setenv("INFERWATCH_DETECT__ENABLED", '["drift", "nope"]')
    assert main(["replay", str(events_file)]) == 2
    err = capsys.readouterr().err
    assert "unknown detector(s) nope" in err
    assert "registered:" in err


@pytest.mark.parametrize(
    ("argv", "meant"),
    [(["silences", "add", "x=y"], "'silence'"), (["incidents", "lst"], "'list'"),
     (["--log-level", "warn", "scan"], "'warning'"), (["agent", "proxi"], "'proxy'"),
     (["proxy", "--upstream", "http://x"], "'agent proxy'"), (["otlp"], "'collect otlp'")],
)
def test_a_misspelt_command_or_choice_gets_the_one_it_meant(capsys, argv, meant):
    with pytest.raises(SystemExit):
        main(argv)
    assert f"did you mean {meant}?" in capsys.readouterr().err


def test_a_choice_like_nothing_known_gets_no_guess(capsys):
    with pytest.raises(SystemExit):
        main(["incidents", "zzz"])
    err = capsys.readouterr().err
    assert "invalid choice: 'zzz' (choose from 'list'" in err
    assert "did you mean" not in err


def test_bad_time_is_explained(capsys):
    with pytest.raises(SystemExit):
        main(["events", "search", "--since", "yesterday-ish"])
    assert "use RFC 3339" in capsys.readouterr().err


@pytest.mark.parametrize("path", [[], ["demo"], ["detect"], ["replay"], ["incidents"], ["incidents", "list"],
                                  ["incidents", "show"], ["incidents", "ack"], ["incidents", "resolve"],
                                  ["incidents", "reopen"], ["incidents", "note"],
                                  ["events"], ["events", "search"], ["events", "dead-letters"], ["scan"]])
def test_help_everywhere(capsys, path):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*path, "--help"])
    assert done.value.code == 0
    assert "usage: inferwatch" in capsys.readouterr().out


def test_a_store_or_bus_whose_folder_cannot_be_made_is_named(capsys, tmp_path):
    blocker = tmp_path / "a-file.csv"
    blocker.write_text("x\n")
    assert main(["silence", "add", "service=chat", "--store", str(blocker / "s.db")]) == 1
    err = capsys.readouterr().err
    assert f"cannot open the incident store at {blocker / 's.db'} (store.path, INFERWATCH_STORE__PATH)" in err
    assert "Traceback" not in err
    assert main(["events", "dead-letters", "--bus", str(blocker / "b.db")]) == 1
    assert f"no bus at {blocker / 'b.db'} (bus.path, INFERWATCH_BUS__PATH)" in capsys.readouterr().err


def test_events_of_an_incident_and_by_id(capsys, store):
    main(["incidents", "list", "--store", store, "--detector", "prompt_injection", "--json"])
    incident = _json_lines(capsys)[0]
    assert main(["events", "search", "--store", store, "--incident", incident["id"][:6], "--json"]) == 0
    found = _json_lines(capsys)
    assert sorted(e["id"] for e in found) == sorted(incident["event_ids"])
    assert {e["principal"] for e in found} == {"p_mallory"}
    one = found[-1]["id"]
    assert main(["events", "search", "--store", store, "--id", one, "--json"]) == 0
    assert [e["id"] for e in _json_lines(capsys)] == [one]
    assert main(["events", "search", "--store", store, "--id", one, "--principal", "p_nobody", "--json"]) == 0
    assert _json_lines(capsys) == []
    assert main(["events", "search", "--store", store, "--incident", "ffffffff"]) == 1
    assert "no incident with id 'ffffffff'" in capsys.readouterr().err


def test_events_search_refuses_what_can_never_match(capsys, store):
    assert main(["events", "search", "--store", store, "--since", "5m", "--until", "1h"]) == 2
    assert "must be before --until" in capsys.readouterr().err
    for flags in (["--limit", "0"], ["--trace-id", "abc"]):
        with pytest.raises(SystemExit):
            main(["events", "search", "--store", store, *flags])
        assert "events search: error: argument" in capsys.readouterr().err
    trace = "4BF92F3577B34DA6A3CE929D0E0E4736"  # as some tools print it
    assert main(["events", "search", "--store", store, "--trace-id", trace]) == 0


def test_incidents_list_says_when_it_stopped_at_its_limit(capsys, store):
    main(["incidents", "list", "--store", store, "--json"])
    total = len(_json_lines(capsys))
    assert total > 2
    for flags in ([], ["--json"]):  # on stderr, so with --json too
        assert main(["incidents", "list", "--store", store, "--limit", "2", *flags]) == 0
        captured = capsys.readouterr()
        assert "the newest 2 incidents; more may match: raise --limit" in captured.err
        if flags:
            assert len(captured.out.splitlines()) == 2
    assert main(["incidents", "list", "--store", store, "--limit", str(total + 1)]) == 0
    assert "more may match" not in capsys.readouterr().err


@pytest.mark.parametrize("action", ["list", "show", "ack", "resolve"])
def test_incidents_options_all_have_help(capsys, action):
    with pytest.raises(SystemExit):
        main(["incidents", action, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    parser = build_parser()
    incidents = next(a for a in parser._subparsers._group_actions[0].choices["incidents"]._actions
                     if a.dest == "action").choices[action]
    bare = [a.option_strings or [a.dest] for a in incidents._actions if a.help is None]
    assert bare == []
    if action != "list":
        assert "unique prefix of at least 4 characters" in shown
    else:
        assert "more may match" in shown


def test_events_search_says_when_more_may_match(capsys, store):
    assert main(["events", "search", "--store", store, "--limit", "3"]) == 0
    assert "the newest 3 events; more may match" in capsys.readouterr().err
    assert main(["events", "search", "--store", store, "--principal", "p_mallory", "--limit", "1000"]) == 0
    assert "more may match" not in capsys.readouterr().err


def test_incidents_by_a_bare_caller_pseudonym(capsys, store):
    main(["incidents", "list", "--store", store, "--subject", "principal:p_mallory", "--json"])
    with_prefix = _json_lines(capsys)
    main(["incidents", "list", "--store", store, "--subject", "p_mallory", "--json"])
    assert _json_lines(capsys) == with_prefix != []
    assert "cut short" not in capsys.readouterr().err


def test_incidents_of_a_cut_short_pseudonym_say_it_is_cut_short(capsys, store):
    for subject in ("p_777efeba", "principal:p_777efeba"):
        assert main(["incidents", "list", "--store", store, "--subject", subject]) == 0
        captured = capsys.readouterr()
        assert "no incidents" in captured.out
        assert ("inferwatch incidents list: a pseudonym is p_ and 24 hex digits; 'p_777efeba' has 8 "
                "(cut short?") in captured.err


@pytest.mark.parametrize("command", [
    ["incidents", "list"], ["incidents", "show", "abcd"], ["incidents", "ack", "abcd"],
    ["incidents", "timeline", "abcd"], ["incidents", "report", "abcd"], ["events", "search"],
    ["alerts", "log"], ["silence", "list"], ["baseline", "show"], ["baseline", "clear", "--model", "m"],
])
def test_reading_a_store_that_is_not_there_says_so_and_makes_none(capsys, tmp_path, command) -> None:
    missing = tmp_path / "typo" / "store.db"
    assert main([*command, "--store", str(missing)]) == 1
    assert f"no store at {missing} (store.path, INFERWATCH_STORE__PATH)" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_reading_dead_letters_of_a_bus_that_is_not_there_says_so_and_makes_none(capsys, tmp_path) -> None:
    missing = tmp_path / "typo" / "bus.db"
    assert main(["events", "dead-letters", "--bus", str(missing)]) == 1
    assert f"no bus at {missing} (bus.path, INFERWATCH_BUS__PATH)" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_a_misspelled_detector_gets_a_hint_not_just_nothing(capsys, store):
    assert main(["incidents", "list", "--store", store, "--detector", "requestrate"]) == 0
    captured = capsys.readouterr()
    assert "no incidents" in captured.out
    assert "no detector named 'requestrate' is installed (did you mean request_rate?" in captured.err
    assert main(["incidents", "list", "--store", store, "--detector", "request_rate", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_a_mistyped_option_is_refused_by_its_command_with_the_nearest_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "events.jsonl", "--windw", "5m"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: inferwatch replay ")
    assert "unrecognized arguments: --windw 5m (did you mean --window?)" in err
    with pytest.raises(SystemExit):
        main(["incidents", "list", "--sinse", "2h"])
    assert "inferwatch incidents list: error: unrecognized arguments: --sinse 2h (did you mean --since?)" in (
        capsys.readouterr().err)


def test_event_tables_use_the_terminal_width_and_show_a_tabular_answer(capsys, monkeypatch, tmp_path):
    from inferwatch.collectors.event import EventOutput
    from inferwatch.detectors.sqlite_store import SQLiteStore
    from inferwatch.testing import make_event

    path = str(tmp_path / "store.db")
    features = {f"feature_{i}": 0.125 * i for i in range(8)}
    db = SQLiteStore(path)
    db.add_events([make_event(1_767_225_600.0, principal="p_a", model="m", features=features,
                              output=EventOutput(label="approve"))])
    db.close()
    main(["events", "search", "--store", path])
    narrow = capsys.readouterr().out
    assert "… (8 features)" in narrow
    monkeypatch.setenv("COLUMNS", "250")
    main(["events", "search", "--store", path])
    wide = capsys.readouterr().out
    assert "feature_7=0.875 → approve" in wide
    assert "features)" not in wide


def test_show_says_in_which_order_and_on_which_clocks_the_history_is(capsys, store):
    main(["incidents", "list", "--store", store, "--detector", "request_rate", "--json"])
    incident = _json_lines(capsys)[0]
    assert main(["incidents", "resolve", incident["id"], "--store", store, "--actor", "alice"]) == 0
    capsys.readouterr()
    assert main(["incidents", "show", incident["id"], "--store", store]) == 0
    shown = capsys.readouterr().out
    history = shown[shown.index("\nhistory (") + 1:].splitlines()
    assert history[0] == ("history (in the order the changes were made; inferwatch's entries carry the event "
                          "time of the finding or window behind them, a person's the time they acted):")
    assert [line.split()[2] for line in history[1:]] == ["opened", "resolved"]


def test_show_says_the_score_is_the_highest_and_the_evidence_the_latest(capsys, store):
    main(["incidents", "list", "--store", store, "--json"])
    several = next(i for i in _json_lines(capsys) if i["count"] > 1)
    assert main(["incidents", "show", several["id"], "--store", store]) == 0
    shown = capsys.readouterr().out
    assert f"highest score: {several['score']:.2f}" in shown
    assert "(the title is the most severe finding's; the summary below the latest's)" in shown
    assert "summary (latest finding):" in shown
    assert "evidence (latest finding):" in shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["replay", "x.jsonl", "--window", "3d"], "'3d': a window lasts at most 1d (86400 s)"),
     (["incidents", "timeline", "abcd", "--before", "1h30"], "invalid duration '1h30'"),
     (["silence", "add", "a=b", "--duration", "30 m"], "invalid duration '30 m'"),
     (["incidents", "list", "--since", "10000y"], "'10000y' reaches back before the year 1"),
     (["silence", "add", "a=b", "--starts", "9000y"], "'9000y' reaches past the year 9999")],
)
def test_lengths_of_time_are_refused_naming_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_lengths_of_time_take_units():
    parser = build_parser()
    before = parser.parse_args(["incidents", "timeline", "abcd", "--before", "90s"]).before
    assert before == timedelta(seconds=90)
    assert parser.parse_args(["incidents", "report", "abcd", "--after", "0"]).after.total_seconds() == 0
    assert parser.parse_args(["silence", "add", "a=b", "--duration", "1.5h"]).duration.total_seconds() == 5400
    assert parser.parse_args(["replay", "x.jsonl", "--window", "1.5h"]).window == 5400


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["silence", "add", "a=b", "--duration", "2"],
      "argument --duration: '2' has no unit: seconds, minutes, hours? Write it with one (s, m, h or d), "
      "e.g. --duration 2h"),
     (["incidents", "timeline", "abcd", "--before", "90"], "argument --before: '90' has no unit"),
     (["incidents", "timeline", "abcd", "--after", "5"], "e.g. --after 5m"),
     (["incidents", "report", "abcd", "--before", "1.5"], "e.g. --before 1.5m"),
     (["incidents", "report", "abcd", "--related-window", "2"], "e.g. --related-window 2h")],
)
def test_a_bare_number_is_no_length_of_time(capsys, argv, message):
    """As --since and amtool: 2 could be seconds, minutes or hours, so the unit is asked for."""
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_an_id_prefix_two_incidents_share_is_named_ambiguous(capsys, store):
    from inferwatch.detectors.sqlite_store import SQLiteStore
    from inferwatch.detectors.store import IncidentQuery

    db = SQLiteStore(store)
    first = db.list_incidents(IncidentQuery(limit=1))[0]
    twins = [first.model_copy(update={"id": f"beef{n}{'0' * 11}", "fingerprint": f"twin{n}"})
             .at_revision(None) for n in (1, 2)]
    db.upsert(twins)
    for argv in (["incidents", "show", "beef"], ["incidents", "timeline", "beef"],
                 ["events", "search", "--incident", "beef"]):
        assert main([*argv, "--store", store]) == 1
        err = capsys.readouterr().err
        assert "id prefix 'beef' is shared by several incidents (beef100000000000, beef200000000000)" in err
    assert main(["incidents", "show", "beef1", "--store", store]) == 0


def test_events_search_by_address_and_status(capsys, tmp_path):
    """An auth_abuse incident names an address (subject ip:…): what did it try, and what failed."""
    from inferwatch.detectors.sqlite_store import SQLiteStore
    from inferwatch.testing import make_event

    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    store.add_events([make_event(1_767_225_600.0 + i, principal=f"p_{i:024x}", id=f"e{i}", client_ip=ip,
                                 status=status)
                      for i, (ip, status) in enumerate([("203.0.113.9", 401), ("203.0.113.9", 403),
                                                        ("203.0.113.9", 200), ("2001:db8::7", 401),
                                                        ("::ffff:198.51.100.9", 401),  # a dual-stack listener
                                                        ("2001:DB8:0:0::8", 403)])])
    store.close()

    def found(*flags: str) -> list[str]:
        assert main(["events", "search", "--store", str(path), "--json", *flags]) == 0
        return [line["id"] for line in _json_lines(capsys)]

    assert found("--client-ip", "ip:203.0.113.9") == ["e2", "e1", "e0"]  # an incident's subject as it is
    assert found("--client-ip", "ip: 203.0.113.9 ") == ["e2", "e1", "e0"]
    assert found("--client-ip", "203.0.113.9", "--status", "4xx") == ["e1", "e0"]
    assert found("--status", "401") == ["e4", "e3", "e0"]
    assert found("--status", "402-403") == ["e5", "e1"]
    assert found("--client-ip", "2001:DB8:0::7") == ["e3"]  # any spelling of the address
    assert found("--client-ip", "198.51.100.9") == found("--client-ip", "::ffff:198.51.100.9") == ["e4"]
    assert found("--client-ip", "2001:db8::8") == ["e5"]  # stored as the server spelt it
    assert main(["events", "search", "--store", str(path), "--client-ip", "203.0.113.77"]) == 0
    err = capsys.readouterr().err  # a host's address, where agents record its network by default
    assert "truncated to its network" in err
    assert "try --client-ip 203.0.113.0" in err
    assert main(["events", "search", "--store", str(path), "--client-ip", "2001:db8::7",
                 "--status", "5xx"]) == 0
    assert "truncated" not in capsys.readouterr().err  # the address has events: --status emptied it
    for flags, says in ((["--client-ip", "203.0.113"], "is not an IP address"),
                        (["--status", "4x"], "give an HTTP status (401), a class (4xx) or a range"),
                        (["--status", "499-400"], "give an HTTP status"),
                        (["--status", "401-"], "give an HTTP status"),
                        (["--status", "4_01"], "give an HTTP status"),
                        (["--status", "\u0664\u0660\u0661"], "give an HTTP status"),  # Arabic-Indic 401
                        (["--status", "600"], "from 100 to 599")):
        with pytest.raises(SystemExit):
            main(["events", "search", "--store", str(path), *flags])
        assert says in capsys.readouterr().err


def test_show_says_a_severity_above_every_findings_own_was_escalated_by_count():
    import io
    from datetime import UTC, datetime, timedelta

    from inferwatch import render
    from inferwatch.detectors.base import Finding
    from inferwatch.detectors.incidents import IncidentManager
    from inferwatch.testing import memory_store

    manager = IncidentManager(memory_store())
    start = datetime(2026, 5, 1, tzinfo=UTC)
    for n in range(5):
        [incident] = manager.apply([Finding(
            detector="request_rate", kind="abuse", severity="medium", score=0.55, title="flood", summary="s",
            subject="principal:p1", time=start + timedelta(minutes=n), event_ids=[f"e{n}"])])
        out = io.StringIO()
        render.incident_detail(incident, out)
        status_line = next(line for line in out.getvalue().splitlines() if "severity:" in line)
        if n < 4:
            assert "escalated" not in status_line
    assert incident.severity == "high"
    assert "severity: high (escalated: 5 findings, each at most medium)    highest score: 0.55" in status_line


@pytest.mark.parametrize(("flags", "meant"), [
    (["--model", "TABULAR"], "--model tabular"),
    (["--subject", "principal:P_FLOODER"], "--subject principal:p_flooder"),
    (["--subject", "P_flooder"], "--subject principal:p_flooder"),
    (["--model", "Chat", "--detector", "prompt_injection"], "--model chat")])
def test_a_model_or_subject_off_only_by_case_names_the_one_meant(capsys, store, flags, meant):
    assert main(["incidents", "list", "--store", store, *flags]) == 0
    captured = capsys.readouterr()
    assert captured.out == "no incidents\n"
    assert "differs only in case" in captured.err
    assert captured.err.rstrip().endswith(meant)


def test_a_model_nothing_has_in_any_case_gets_no_case_note(capsys, store):
    assert main(["incidents", "list", "--store", store, "--model", "tabulr"]) == 0
    assert "differs only in case" not in capsys.readouterr().err
