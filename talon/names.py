"""Which names the Kubernetes API server accepts, per kind of object.

Layer L0: stdlib and talon.errors only. Names taken from events are checked with
`check_name` before any URL holding them is built (talon.clients.kube re-exports it for
the plug-ins); configuration checks reuse the same rules.
"""

from __future__ import annotations

import re

from talon.errors import EventError

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
LABEL = "label"
"""DNS-1123 label: namespaces (lower-case letters, digits, '-', at most 63 characters)."""
SUBDOMAIN = "subdomain"
"""DNS-1123 subdomain: pods and most objects (labels joined by '.', at most 253)."""
DNS1035 = "dns1035"
"""DNS-1035 label: services (a DNS-1123 label that starts with a letter)."""
RBAC = "rbac"
"""Path-segment names (roles, clusterroles): any text but '.', '..', '/' and '%'."""

_NAME_RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    LABEL: (re.compile(_LABEL), 63, "a DNS-1123 label (lower-case letters, digits and '-', "
                                    "starting and ending with a letter or digit, at most 63)"),
    SUBDOMAIN: (re.compile(rf"{_LABEL}(?:\.{_LABEL})*"), 253,
                "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253)"),
    DNS1035: (re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"), 63,
              "a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, "
              "at most 63)"),
    RBAC: (re.compile(r"(?!\.\.?$)[^/%?#\s\x00-\x1f\x7f-\x9f\u2028\u2029]+"), 253,
           "a name without '/', '%', '?', '#', whitespace or control characters, "
           "not '.' or '..', at most 253"),
}


def check_name(value: str, field: str, rule: str = SUBDOMAIN) -> str:
    """`value` when the API server would accept it as a name under `rule` (LABEL,
    SUBDOMAIN, DNS1035 or RBAC); EventError naming `field` otherwise. Called before any
    URL holding the name is built."""
    pattern, limit, what = _NAME_RULES[rule]
    if len(value) <= limit and pattern.fullmatch(value):
        return value
    shown = repr(value[:64]) + ("..." if len(value) > 64 else "")
    raise EventError(field, f"{shown} is not a valid name: expected {what}")


def is_name(value: str, rule: str = SUBDOMAIN) -> bool:
    """Whether the API server would accept `value` as a name under `rule`."""
    pattern, limit, _what = _NAME_RULES[rule]
    return len(value) <= limit and pattern.fullmatch(value) is not None
