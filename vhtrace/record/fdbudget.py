"""How many fds the relay may keep open for messages in flight: bounded by its fd limit.

A message's fds are the relay's own while it holds them: installed by ``recvmsg``, kept
in a destination's outbox until ``sendmsg`` takes them, copied for the recorder until
the link hands the copies over. A peer that keeps sending fds while the other side
stops reading would otherwise take the relay to its fd limit, and there the kernel
does not fail ``recvmsg``: it drops the fds of the message being read (``MSG_CTRUNC``),
so the message would go on without them. The relay therefore reads a message only while
the fds it could bring (up to ``SCM_MAX_FD``) fit in what is left below the limit,
less a reserve for the sockets it opens itself (a new session, an interposed channel);
a source waits in the kernel's queue, where its fds are safe, until sends free some.
Pure arithmetic, no I/O: the relay tells it what it holds.
"""

from __future__ import annotations

import os
import resource

from vhtrace.protocol.spec import SCM_MAX_FD

RESERVE = 64
"""fds kept free for what the relay opens itself (sessions, interposed channels)."""


class FdBudget:
    """What is left for fds in flight, given the fd limit and the fds open at start."""

    def __init__(self, limit: int, open_at_start: int, reserve: int = RESERVE) -> None:
        self.limit = limit
        self.available = max(0, limit - open_at_start - reserve)
        """fds in flight and endpoints the relay may keep open on top of its start."""

    @classmethod
    def of_this_process(cls) -> FdBudget:
        """The budget of the calling process, after raising its soft fd limit to the hard
        one (the relay's fds are its peers', and epoll has no limit of its own)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return cls(soft, len(os.listdir("/proc/self/fd")))

    def may_read(self, in_flight: int, endpoints: int) -> bool:
        """May a message be read now? Always with nothing in flight (else nothing
        moves); otherwise only if its fds, however many, fit."""
        return in_flight == 0 or in_flight + endpoints + SCM_MAX_FD <= self.available

    def may_copy(self, in_flight: int, endpoints: int, count: int) -> bool:
        """May ``count`` more fds be copied for the recorder (their metadata)?"""
        return in_flight + endpoints + count + SCM_MAX_FD <= self.available
