"""Where the daemon may connect to: the one place that decides.

How a URL spells its host cannot say where a connection goes: `0x7f000001`, `0xa9fea9fe`,
`012.0.0.1` and `0x7f.1` are IPv4 addresses to the system resolver, `[::127.0.0.1]` embeds
one, `127.0.0.1.nip.io` is a public name for loopback, and a name may answer differently
when it is used than when it was checked (DNS rebinding). So the check is made on the
address a connection is actually opened to, through two hooks aiohttp's `TCPConnector`
supports:

- a resolver (`AbstractResolver`) that drops every non-public answer for a name, and
  refuses the name when nothing public is left. The connector connects to exactly these
  answers and caches only them, so a name is never checked once and used differently;
- a `socket_factory`, called with the address of every connection attempt. It is the only
  hook that sees IP literals (aiohttp hands those to no resolver), and a second look at
  everything else.

Non-public: loopback, private (RFC 1918, unique-local), link-local (cloud metadata at
169.254.169.254), CGNAT (100.64.0.0/10), multicast, reserved and unspecified. An IPv6 address
that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the IPv4 address.

A guard may allow named hosts to be private (`allowed_private`): a provider's own host when
its config says `allow_private_base_url = true`, an agent's `allowed_hosts` entry spelled as
an IP address or `localhost`. Such names are resolved without filtering, and the addresses
they resolve to are accepted by the socket check (which cannot see host names).

The cost is per new connection (a DNS answer is checked once per cache lifetime, an address
once per connection, classifications are cached); requests on pooled connections pay nothing.

Importing this module does not import aiohttp: the CLI checks configs with it.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = IPv4Address | IPv6Address

_RFC1918 = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)
_CGNAT = IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = IPv6Network("fc00::/7")
_SITE_LOCAL = IPv6Network("fec0::/10")  # deprecated, still routed as private on some networks
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
# A host made only of numbers in any base the C resolver accepts (1 to 4 parts).
_NUMERIC_HOST = re.compile(r"(?:(?:0x[0-9a-f]*|[0-9]+)\.){0,3}(?:0x[0-9a-f]*|[0-9]+)\.?", re.I)
# How many resolved addresses of allowed names a guard remembers for its socket check.
_MAX_LEARNED = 4096


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: mapped, compatible, NAT64 or 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: or ::1
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _classify(address: IPAddress) -> str | None:
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            kind = _classify(embedded)
            if kind is not None:
                return kind
            if address.ipv4_mapped is None and address in _IPV4_COMPATIBLE:
                return "reserved"  # IPv4-compatible addresses are deprecated: nothing real
            return None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, IPv4Address):
        if address in _CGNAT:
            return "CGNAT"
        if any(address in net for net in _RFC1918):
            return "private"
    elif address in _UNIQUE_LOCAL or address in _SITE_LOCAL:
        return "private"
    if address.is_private or address.is_reserved or not address.is_global:
        return "reserved"
    return None


@functools.lru_cache(maxsize=4096)
def _classify_text(text: str) -> str | None:
    return _classify(ipaddress.ip_address(text.partition("%")[0]))


def address_class(address: str | IPAddress) -> str | None:
    """None for a public address; otherwise what it is: loopback, private, link-local, CGNAT,
    multicast, reserved or unspecified. Raises ValueError for text that is no IP address."""
    if isinstance(address, str):
        return _classify_text(address)
    return _classify(address)


def ip_literal(host: str) -> IPAddress | None:
    """The address a host written as a canonical IP literal names (brackets, zone allowed);
    None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def is_numeric_spelling(host: str) -> bool:
    """True for a host the system resolver takes as an IPv4 address though it is not written
    as one (`0x7f000001`, `2130706433`, `012.0.0.1`, `127.1`, `0x7f.1`)."""
    return bool(_NUMERIC_HOST.fullmatch(host)) and ip_literal(host.rstrip(".")) is None


def _normal_host(host: str) -> str:
    literal = ip_literal(host)
    return str(literal) if literal is not None else host.lower().rstrip(".")


class EgressRefused(OSError):
    """A connection the guard would not open. An OSError because aiohttp and aiohappyeyeballs
    carry only those out of a connection attempt (as a `ClientConnectorError`'s
    `os_error`); `refusal_in` finds it there."""

    def __init__(self, address: str, kind: str, host: str | None = None) -> None:
        self.address = address
        self.kind = kind
        self.host = host
        where = f"{host} ({address})" if host and host != address else address
        super().__init__(errno.EACCES, f"refused to connect to {where}: a {kind} address")

    def __str__(self) -> str:
        return str(self.strerror)


def refusal_in(error: BaseException | None) -> EgressRefused | None:
    """The guard's refusal behind an aiohttp connection error, if that is what it was."""
    for _ in range(8):  # the chains are short; a cycle must not hang us
        if error is None or isinstance(error, EgressRefused):
            return error
        cause = getattr(error, "os_error", None)
        error = cause if isinstance(cause, BaseException) else error.__cause__
    return None


class EgressGuard:
    """The connect-time checks of one connector.

    `allowed_private`: hosts (names or IP literals, as URLs write them) that may be
    non-public. A refusal raises `EgressRefused`, which aiohttp carries out wrapped in a
    `ClientConnectorError` (a DNS one for a name); `refusal_in` finds it there.
    """

    def __init__(self, allowed_private: Iterable[str] = ()) -> None:
        self._names: frozenset[str] = frozenset(_normal_host(h) for h in allowed_private)
        self._allowed: set[str] = {h for h in self._names if ip_literal(h) is not None}

    def allows_private(self, host: str) -> bool:
        return _normal_host(host) in self._names

    def answers(self, host: str, answers: list[ResolveResult]) -> list[ResolveResult]:
        """What the resolver hands on for `host`: its public answers, or all of them when the
        host is allowed to be private. Raises when nothing is left."""
        if self.allows_private(host):
            if len(self._allowed) > _MAX_LEARNED:
                self._allowed = {h for h in self._names if ip_literal(h) is not None}
            self._allowed.update(_normal_host(a["host"]) for a in answers)
            return answers
        public = [a for a in answers if address_class(a["host"]) is None]
        if public or not answers:
            return public
        raise EgressRefused(answers[0]["host"], address_class(answers[0]["host"]) or "", host)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's `socket_factory`: a socket for a public address or an allowed one."""
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        kind = address_class(address)
        if kind is not None and _normal_host(address) not in self._allowed:
            raise EgressRefused(address, kind)
        return socket.socket(family=family, type=type_, proto=proto)

    def connector(self, **options: Any) -> aiohttp.TCPConnector:
        """A TCPConnector that connects only where this guard allows."""
        import aiohttp

        return aiohttp.TCPConnector(
            resolver=_guarded_resolver_type()(self), socket_factory=self.socket_factory, **options
        )


def guarded_session(
    *,
    allowed_private: Iterable[str] = (),
    connector: dict[str, Any] | None = None,
    **session_options: Any,
) -> aiohttp.ClientSession:
    """A ClientSession behind an `EgressGuard`; never reads proxies from the environment
    (a proxy would connect for us, out of the guard's sight)."""
    import aiohttp

    guard = EgressGuard(allowed_private)
    session_options.setdefault("trust_env", False)
    return aiohttp.ClientSession(connector=guard.connector(**(connector or {})), **session_options)


@functools.cache
def _guarded_resolver_type() -> Callable[[EgressGuard], AbstractResolver]:
    # Defined on first use so that importing this module does not import aiohttp.
    from aiohttp.abc import AbstractResolver
    from aiohttp.resolver import ThreadedResolver

    class GuardedResolver(AbstractResolver):
        """The system resolver, its answers passed through the guard. ThreadedResolver on
        purpose: it holds nothing to release, and the connector does not close resolvers it
        was given."""

        def __init__(self, guard: EgressGuard) -> None:
            self._guard = guard
            self._inner = ThreadedResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return self._guard.answers(host, await self._inner.resolve(host, port, family))

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver
