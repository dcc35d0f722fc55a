"""Which fd a channel-opening message must carry, told from the fd's metadata (pure).

The relay interposes its own socketpair or pipe for the fds that open a channel
(``RequestSpec.opens``). It may only do so for an fd of the kind the channel
needs: anything else is relayed as it came, with a finding saying what was due
and what came. The relay gathers the metadata (I/O); this module only judges it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DUE = {
    "backend": "a unix stream socket",
    "gpu": "a unix stream socket",
    "device-state": "a pipe",
}
"""What each interposed channel needs, in words (for findings)."""

_ARTICLE_AN = (
    "eventfd",
    "userfaultfd",
    "other",
    "inet",
    "inet6",
    "unconnected",
    "unreadable",
    "unknown-family",
)


def _article(word: str) -> str:
    return "an" if word.split(" ", 1)[0] in _ARTICLE_AN else "a"


def describe_kind(meta: Mapping[str, Any]) -> str:
    """An fd's kind in words, from fdinfo-style metadata: 'an eventfd', 'a unix dgram socket'."""
    kind = str(meta.get("kind", "other"))
    if kind == "socket":
        family = meta.get("family", "unknown-family")
        words = f"{family} {meta.get('type', 'unknown-type')} socket"
        if meta.get("connected") is False:
            words = "unconnected " + words
    elif kind == "other" and meta.get("error"):
        words = f"unreadable fd ({meta['error']})"
    else:
        words = kind
    return f"{_article(words)} {words}"


def wrong_fd(opens: str, meta: Mapping[str, Any]) -> str | None:
    """None if the fd suits channel ``opens``; else 'an eventfd, a unix stream socket is due'."""
    due = DUE.get(opens)
    if due is None:
        return None
    kind = meta.get("kind")
    if opens in ("backend", "gpu"):
        unix_stream = meta.get("family") == "unix" and meta.get("type") == "stream"
        fits = kind == "socket" and unix_stream and meta.get("connected") is not False
    else:
        fits = kind == "pipe"
    if fits:
        return None
    return f"{describe_kind(meta)}, {due} is due"
