"""Hiding passwords in URLs and in messages that quote them.

A leaf module (no flowdb imports), so that the error family at the bottom of the
package can redact its messages without depending on the database layer.
"""

from __future__ import annotations

import re

#: ``scheme://user:password@`` inside a longer text (error messages).
_PASSWORD_IN_URL = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<tail>@)")
#: ``password=...`` as a URL query parameter or a libpq ``key=value`` setting.
PASSWORD_PARAMETER = re.compile(r"(?P<key>\bpassword\s*=\s*)(?:'[^']*'|[^&\s]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``; works on malformed URLs too.

    The text is treated as one URL, however broken: whatever sits between the first
    ``:`` of its ``user:password`` part and its last ``@`` is hidden, and so is any
    ``password=`` parameter. When in doubt more is hidden, never less.
    """
    text = url
    at = text.rfind("@")
    if at >= 0:
        authority = text.find("//", 0, at)
        start = authority + 2 if authority >= 0 else 0
        colon = text.find(":", start, at)
        if colon >= 0:
            text = f"{text[: colon + 1]}***{text[at:]}"
    return PASSWORD_PARAMETER.sub(r"\g<key>***", text)


def redact_message(message: str) -> str:
    """Hide passwords of any URLs or ``password=`` settings quoted inside ``message``."""
    text = _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", message)
    return PASSWORD_PARAMETER.sub(r"\g<key>***", text)
