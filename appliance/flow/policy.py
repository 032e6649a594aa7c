"""Where flows may reach: webhook URLs, transfer destinations and the audio files they play,
matched so no wildcard, dot segment or second spelling can cross a separator (toll-fraud and
data-exfiltration protection).

URL entries are prefixes, `scheme://host[:port]/path`, the host optionally `*.domain`
for its subdomains; both sides are compared in one normal form (`normalise_url`), and that
form is also the URL requested, so the server reads the path that was checked. Transfer
entries are SIP URIs `sip:USER@HOST` whose user part may use `*` and `?` over phone-number
characters only, or bare numbers with the same wildcards. Audio files must resolve inside
the flows directory (`flow_file`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, urlsplit

_USER = re.compile(r"^[0-9A-Za-z+*#._-]+$")
_NUMBER = re.compile(r"^\+?[0-9*#]+$")
_SIP = re.compile(r"^(sips?):([^@;?>\s]+)@([A-Za-z0-9.-]+)(?::(\d+))?$")

# ws and wss: a flow's `egress` streams audio to a WebSocket server under the same allow-list.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# RFC 3986 unreserved, sub-delims, ':' '@' '/' '?' and '%' for escapes: anything else (spaces,
# controls, backslashes, non-ASCII, '<>"{}|^`[]' outside an IPv6 host) is refused rather than
# re-encoded, because servers disagree on how to read it. urlsplit alone silently drops tabs
# and newlines, so this runs on the text as written.
_URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]#]*$")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")  # "_": intranet names use it
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_DOT_PARAMETER = re.compile(r"^\.\.?(;|%3B)")


def normalise_url(url: str) -> str:
    """`url` in the one form allow-list entries are compared in and webhooks are requested by.

    Lowercase scheme and host without the root's trailing dot; no default port; escapes of
    unreserved characters decoded and the rest in upper case (RFC 3986 6.2.2); repeated
    slashes merged, then dot segments removed (5.2.4); no fragment. Raises ValueError for
    what a server could read as another path: encoded '/', '\\' or '%' (a server that decodes
    twice), backslashes, '..;' segments, user info, and hosts only a resolver would read
    as an address (`127.1`, `0x7f.0.0.1`).
    """
    if not _URL_CHARS.match(url):
        raise ValueError("URL has characters outside RFC 3986 (spaces, controls, backslashes, non-ASCII)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("URL scheme must be http, https, ws or wss")
    if "@" in parts.netloc:
        raise ValueError("URL must not carry user info")
    host = _normal_host(parts.hostname or "", parts.netloc)
    port = parts.port  # ValueError for a port out of range or not a number
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if "[" in parts.path + parts.query or "]" in parts.path + parts.query:
        raise ValueError("URL has '[' or ']' outside an IPv6 host")
    path = _normal_path(parts.path)
    query = _normal_escapes(parts.query) if parts.query else ""
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _normal_host(host: str, netloc: str) -> str:
    if not host:
        raise ValueError("URL has no host")
    if "%" in netloc:
        raise ValueError("URL host must not be percent-encoded")
    if netloc.startswith("["):
        return f"[{ipaddress.IPv6Address(host).compressed}]"  # ValueError if not an IPv6 address
    host = host[:-1] if host.endswith(".") else host
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError("URL host is not a DNS name or an IPv4 address")
    if _NUMERIC_LABEL.match(labels[-1]):
        # Only the dotted-quad spelling: getaddrinfo reads `127.1` or `2130706433` as
        # 127.0.0.1, which an allow-list entry for 127.0.0.1 would not recognise.
        return str(ipaddress.IPv4Address(host))  # ValueError for any other spelling
    return host


def _normal_escapes(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    if "%" in _ESCAPE.sub("", text):
        raise ValueError("URL has a '%' that is not an escape")
    return _ESCAPE.sub(one, text)


def _normal_path(path: str) -> str:
    path = _normal_escapes(path)
    for refused in ("%2F", "%5C", "%25"):
        if refused in path:
            raise ValueError(f"URL path has {refused}, which servers read in different ways")
    segments = [s for s in path.split("/") if s]  # merges '//', as nginx does before routing
    out: list[str] = []
    for segment in segments:
        if _DOT_PARAMETER.match(segment):  # Tomcat and Jetty read '..;x' (or '..%3B') as '..'
            raise ValueError("URL path has a dot segment with parameters ('..;')")
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    # A path ending in '/', '/.' or '/..' names a directory: keep the trailing '/'.
    directory = bool(out) and (path.endswith("/") or segments[-1] in (".", ".."))
    return "/" + "/".join(out) + ("/" if directory else "")


def url_allowed(url: str, patterns: list[str]) -> bool:
    """Whether `url` lies under one of `patterns`, both read in their normal form.

    A pattern's path ending in '/' (or '/*') is a directory: everything below it. Otherwise
    the path itself and what is below it, on a segment boundary: `/hooks` allows `/hooks`
    and `/hooks/x`, never `/hooksevil`.
    """
    try:
        target = urlsplit(normalise_url(url))
    except ValueError:
        return False
    host = target.hostname or ""
    for pattern in patterns:
        try:
            allowed, domain = _pattern(pattern)
        except ValueError:
            continue
        host_ok = host.endswith("." + domain) if domain else host == allowed.hostname
        if allowed.scheme != target.scheme or not host_ok or allowed.port != target.port:
            continue
        prefix = allowed.path if allowed.path.endswith("/") else allowed.path + "/"
        if target.path == allowed.path or target.path.startswith(prefix):
            return True
    return False


def _pattern(pattern: str) -> tuple[SplitResult, str | None]:
    """An allow-list entry in normal form, and for `*.domain` the domain its subdomains share."""
    pattern = pattern.rstrip("*")  # ".../*" reads as the directory ".../"
    scheme, star, rest = pattern.partition("://*.")
    if not star:
        return urlsplit(normalise_url(pattern)), None
    # Normalise as if the star were a label, so the domain gets the same rules as any host.
    allowed = urlsplit(normalise_url(f"{scheme}://wildcard.{rest}"))
    return allowed, (allowed.hostname or "").removeprefix("wildcard.")


def flow_file(directory: Path, name: str) -> Path:
    """The file a flow names (`say.audio`, `hold_audio`), resolved; ValueError unless it is
    inside `directory`.

    Absolute paths and '..' are refused as written; the resolved path (symlinks followed) must
    still lie under the resolved directory, so a link in flows/ cannot point at a recording
    or /etc. The checker and the player both call this, the player at play time, so a link
    changed after the flow was checked is caught too.
    """
    relative = PurePosixPath(name)
    if not name or "\x00" in name or "\\" in name or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{name!r} must be a path inside the flows directory, without '..'")
    base = directory.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"{name!r} leads outside the flows directory (to {path})")
    return path


def destination_allowed(to: str, patterns: list[str]) -> bool:
    target = _SIP.match(to)
    if target is None and not _NUMBER.match(to):
        return False
    for pattern in patterns:
        wanted = _SIP.match(pattern)
        if target is not None and wanted is not None:
            scheme, user, host, port = target.groups()
            if (scheme, host.lower(), port) == (wanted.group(1), wanted.group(3).lower(), wanted.group(4)) \
                    and _USER.match(user) and fnmatch.fnmatchcase(user, wanted.group(2)):
                return True
        elif target is None and wanted is None and fnmatch.fnmatchcase(to, pattern):
            return True
    return False
