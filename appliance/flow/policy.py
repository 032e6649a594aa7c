"""Where flows may reach: webhook URLs and transfer destinations, matched so no wildcard can
cross a separator (toll-fraud and data-exfiltration protection).

URL entries are prefixes, `scheme://host[:port]/path`, the host optionally `*.domain`
for its subdomains. Transfer entries are SIP URIs `sip:USER@HOST` whose user part may use
`*` and `?` over phone-number characters only, or bare numbers with the same wildcards.
"""

from __future__ import annotations

import fnmatch
import re
from urllib.parse import urlsplit

_USER = re.compile(r"^[0-9A-Za-z+*#._-]+$")
_NUMBER = re.compile(r"^\+?[0-9*#]+$")
_SIP = re.compile(r"^(sips?):([^@;?>\s]+)@([A-Za-z0-9.-]+)(?::(\d+))?$")


def url_allowed(url: str, patterns: list[str]) -> bool:
    try:
        target = urlsplit(url)
        target_port = target.port
    except ValueError:
        return False
    if target.scheme not in ("http", "https") or not target.hostname or target.username or target.password:
        return False
    for pattern in patterns:
        try:
            allowed = urlsplit(pattern)
            allowed_port = allowed.port
        except ValueError:
            continue
        host = allowed.hostname or ""
        if allowed.scheme != target.scheme or allowed_port != target_port:
            continue
        if host.startswith("*."):
            if not target.hostname.endswith(host[1:]):
                continue
        elif target.hostname != host:
            continue
        prefix = (allowed.path or "/").rstrip("*")  # ".../*" reads as the prefix ".../"
        if (target.path or "/").startswith(prefix):
            return True
    return False


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
