"""Sizes on the command line: one parser for the proxy's and the OTLP receiver's limits."""

import pytest

from inferwatch.cli import build_parser


@pytest.mark.parametrize(("given", "size"), [
    ("20MiB", 20 << 20), ("50MB", 50_000_000), ("1_048_576", 1 << 20),
])
def test_the_otlp_receiver_and_the_proxy_take_sizes_with_units(given, size):
    assert build_parser().parse_args(["collect", "otlp", "--max-body-bytes", given]).max_body_bytes == size
    args = build_parser().parse_args(["agent", "proxy", "--upstream", "http://127.0.0.1:1",
                                      "--max-request-bytes", given])
    assert args.max_request_bytes == size


def test_a_body_limit_under_1024_bytes_is_refused_with_an_example(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "otlp", "--max-body-bytes", "100"])
    assert "'100' is not a size in bytes of at least 1024 (e.g. 33554432 or 32MiB)" in capsys.readouterr().err
