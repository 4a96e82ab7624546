"""Who called: a keyed pseudonym of the caller's credential, and a coarsened client address.

The event bus and the incident store never see an API key or a user id. The agent replaces it
with ``p_`` + the first 24 hex digits (96 bits) of HMAC-SHA256 under a secret key, so:

* the same caller always gets the same pseudonym (per-principal detectors work),
* nobody without the key can test a guessed API key against the log (a plain hash would allow
  exactly that for low-entropy user ids),
* rotating the key unlinks old logs from new ones.

>>> p = Pseudonymizer("k", header="x-api-key")
>>> p.from_headers({"x-api-key": "alice-key"}) == p.pseudonym("alice-key")
True
>>> p.pseudonym("alice-key")[:2], len(p.pseudonym("alice-key"))
('p_', 26)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from pydantic import SecretStr

PREFIX = "p_"
_HEX_DIGITS = 24
_IPV4_PREFIX = 24
_IPV6_PREFIX = 48


class Pseudonymizer:
    """Turns credentials into stable, keyed pseudonyms.

    ``header`` is the request header that carries the caller's identity (case-insensitive);
    when it is absent, the token of ``Authorization: Bearer …`` is used instead.
    """

    def __init__(self, key: SecretStr | str | bytes, *, header: str = "x-api-key") -> None:
        raw = key.get_secret_value() if isinstance(key, SecretStr) else key
        self._key = raw.encode() if isinstance(raw, str) else raw
        self.header = header.lower()

    def __repr__(self) -> str:  # never show the key, even in a debugger or a log line
        return f"Pseudonymizer(header={self.header!r})"

    def pseudonym(self, credential: str) -> str:
        """The pseudonym of ``credential`` (an API key, a user id): ``p_`` + 24 hex digits."""
        digest = hmac.new(self._key, credential.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:_HEX_DIGITS]

    def from_headers(self, headers: Mapping[str, str]) -> str | None:
        """The caller's pseudonym from request headers (lower-case names), or ``None``."""
        credential = credential_from_headers(headers, self.header)
        return self.pseudonym(credential) if credential else None


def credential_from_headers(headers: Mapping[str, str], header: str) -> str | None:
    """The raw credential: the configured ``header`` first, else a ``Bearer`` token.

    >>> credential_from_headers({"authorization": "Bearer tok123"}, "x-api-key")
    'tok123'
    """
    value = headers.get(header.lower(), "").strip()
    if value:
        return value
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def truncate_ip(address: str) -> str | None:
    """Coarsen a client address to its network: IPv4 to /24, IPv6 to /48.

    An IPv4 address carried in IPv6 (``::ffff:a.b.c.d``) is treated as IPv4. Anything that is
    not an IP address (a Unix socket path, a test client's name) gives ``None``, so nothing
    unparsed leaks into the log.

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348")
    ('203.0.113.0', '2001:db8:85a3::')
    """
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = _IPV4_PREFIX if ip.version == 4 else _IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def client_address(address: str | None, *, truncate: bool) -> str | None:
    """The address to record: truncated when configured, else as given (``None`` stays)."""
    if address is None:
        return None
    return truncate_ip(address) if truncate else address


class ProxyChain:
    """Who sent a request that came through trusted proxies (``agent.trusted_proxies``).

    A request whose peer is a trusted proxy is attributed to the nearest address in its
    ``X-Forwarded-For`` that is not itself trusted, read from the right (each proxy appends the
    address it got the request from, and only trusted ones can be believed); a request from any
    other peer is attributed to the peer, whatever the header says, so a client cannot choose
    its own address.

    >>> chain = ProxyChain(["10.0.0.0/8"])
    >>> chain.client("10.1.2.3", {"x-forwarded-for": "198.51.100.7, 10.9.9.9"})
    '198.51.100.7'
    >>> chain.client("203.0.113.5", {"x-forwarded-for": "198.51.100.7"})  # not a proxy: ignored
    '203.0.113.5'
    """

    def __init__(self, trusted: list[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in trusted]
        self._known: dict[str, bool] = {}

    def trusted(self, address: str) -> bool:
        known = self._known.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address.strip())
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self.networks)
            if len(self._known) >= 4096:
                self._known.clear()
            self._known[address] = known
        return known

    def client(self, peer: str | None, headers: Mapping[str, str] | None) -> str | None:
        """The client address to record for a request from ``peer`` with these headers."""
        if peer is None or not self.networks or not headers or not self.trusted(peer):
            return peer
        forwarded = headers.get("x-forwarded-for")
        if not forwarded:
            return peer
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer
