"""Examples in the docs that an on-call walk-through copied and that did not work as written."""

import re
from pathlib import Path

from inferwatch.agent.principal import truncate_ip

ROOT = Path(__file__).resolve().parents[2]


def test_client_ip_examples_are_addresses_as_stored_cut_to_their_network():
    """Events keep the caller's address cut to /24 (agent.truncate_client_ip, on by default): a full
    address in `--client-ip` matches nothing."""
    examples = re.findall(r"--client-ip (?:ip:)?([0-9a-fA-F.:]+)", (ROOT / "docs" / "oncall.md").read_text())
    assert examples
    for address in examples:
        assert truncate_ip(address) == address, address


def test_readme_and_quickstart_give_the_demo_the_same_length():
    readme = (ROOT / "README.md").read_text()
    quickstart = (ROOT / "docs" / "quickstart.md").read_text()
    assert "about half a minute" in readme
    assert "about half a minute" in quickstart
    assert "(about a minute)" not in readme
