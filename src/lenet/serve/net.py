"""Where students can reach the server: the listening socket, the machine's LAN addresses, a QR code of one."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys

from ..errors import LenetError

WILDCARDS = ("0.0.0.0", "::", "")


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or a one-line error."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # Protocol TCP spelt out: asyncio sets TCP_NODELAY only then, and without it every keep-alive
        # response waits 40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as e:
        if sock:
            sock.close()
        raise LenetError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return http(host, port)


def http(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def urls(sock: socket.socket) -> list[str]:
    """The addresses to open the server at: the LAN addresses for a wildcard host, else the one it listens on.

    http://0.0.0.0:PORT opens nothing on a student's phone; the machine's own addresses do.
    """
    host, port = sock.getsockname()[:2]
    if host not in WILDCARDS:
        return [http(host, port)]
    return [http(address, port) for address in lan_addresses()] or [http("127.0.0.1", port)]


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that other machines can use: private ones first, no loopback."""
    found: list[str] = []
    candidates = _interface_addresses() + [_route_address()]
    with contextlib.suppress(OSError):
        candidates += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    for address in candidates:
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast) and address not in found:
            found.append(address)
    return sorted(found, key=lambda a: not ipaddress.IPv4Address(a).is_private)


def _route_address() -> str:
    """The address the default route leaves from (a UDP connect sends nothing), or ''."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.254.254.254", 9))
        return s.getsockname()[0]
    return ""


def _interface_addresses() -> list[str]:
    """Every interface's IPv4 address, on Linux (SIOCGIFADDR); elsewhere [] and the route's address serves."""
    if not sys.platform.startswith("linux"):
        return []
    import fcntl

    addresses = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                request = struct.pack("256s", name.encode()[:15])
                addresses.append(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, request)[20:24]))
    return addresses


def qr_text(text: str) -> str:
    """A QR code of `text` drawn with half blocks for a terminal (dark on light, with its quiet zone)."""
    import io

    import segno

    buf = io.StringIO()
    segno.make(text, error="m").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def qr_svg(text: str) -> str:
    """A QR code of `text` as an inline SVG element for the page (no image file, no network)."""
    import segno

    return segno.make(text, error="m").svg_inline(scale=4, dark="#000", light="#fff")
