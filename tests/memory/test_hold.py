"""A held message: released by the recorder or expired by the relay, never both."""

from __future__ import annotations

import threading

from vhtrace.memory.hold import DEFAULT_HOLD_SECONDS, Hold


def test_released_first_the_snapshot_is_exact_and_the_relay_is_woken() -> None:
    woken: list[bool] = []
    hold = Hold(12.5, lambda: woken.append(True))
    assert not hold.done and hold.deadline == 12.5
    assert hold.release() is True
    assert woken == [True] and hold.done
    assert hold.expire() is False
    assert (hold.released, hold.expired) == (True, False)


def test_expired_first_a_late_release_changes_nothing() -> None:
    woken: list[bool] = []
    hold = Hold(0.0, lambda: woken.append(True))
    assert hold.expire() is True
    assert hold.release() is False
    assert woken == [] and (hold.released, hold.expired) == (False, True)


def race(hold: Hold) -> dict[str, bool]:
    """release and expire started together on two threads; what each returned."""
    results: dict[str, bool] = {}
    start = threading.Barrier(2)

    def side(name: str, act) -> None:
        start.wait()
        results[name] = act()

    threads = [threading.Thread(target=side, args=("release", hold.release)),
               threading.Thread(target=side, args=("expire", hold.expire))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_racing_sides_agree_on_one_outcome() -> None:
    for _ in range(200):
        hold = Hold(0.0, lambda: None)
        results = race(hold)
        assert results["release"] != results["expire"]
        assert hold.released != hold.expired


def test_the_default_hold_is_a_second() -> None:
    assert DEFAULT_HOLD_SECONDS == 1.0
