"""Structure-aware fuzzing of vhost-user peers from recorded traces: ``vhtrace fuzz``.

How the pieces fit (the mutation engine, the oracles and minimization are pure; the I/O
is the replay's):

    trace ─▶ replay plan ─▶ case.Template (front-end messages, regions, ring setups)
                                │
    mutate (field, header, sequence, fd) + rings (descriptor chains) ─▶ Case
                                │
    target (the back-end we start) ◀── driver: replay's SessionRunner + FdFactory,
                                │       player.FuzzPlayer, a liveness probe
                      oracle.judge ─▶ Verdict (crash, panic, hang, violation | ok...)
                                │
    campaign: loop, dedup by signature ─▶ minimize (ddmin) ─▶ repro (vhtrace traces)

Ring attacks reach reproducers as guest-write/ring-kick events (``replay.guestwrites``).
``frontend`` is the other direction: mutated back-end replies and back-end-channel
requests (``backchannel``) written as a trace (``served``) and served to a front-end
(QEMU) it starts, with its firmware as the guest and QMP as the hang oracle's probe. See
docs/fuzzing.md.
"""
