"""A one-line verdict on a store's timestamps: missing, constant, outside plausible unix times, tied.

Histories are ordered by (timestamp, file order), so bad timestamps silently reorder (or fail to
order) every user's events and, with them, which item is held out for test. Nothing is changed
here: the problems are counted and reported, and the user decides.
"""

from __future__ import annotations

import time

import numpy as np

EARLIEST = 631_152_000  # 1990-01-01 in unix seconds: interaction logs are not older
TIE_SHARE = 0.2  # above this share of tied neighbours, file order (not time) orders the histories


def timestamp_problems(times: np.ndarray | None, offsets: np.ndarray, now: float | None = None) -> str | None:
    """What looks wrong with a store's timestamps (sorted within each user), as one line; None if nothing."""
    if times is None:
        return "no timestamps: each history keeps the file's order"
    if len(times) == 0:
        return None
    now = time.time() if now is None else now
    problems = []
    if times.min() == times.max():
        problems.append(f"all {len(times)} are equal ({times[0]:g})")
    else:
        early, late = int((times < EARLIEST).sum()), int((times > now + 86_400).sum())
        if early:
            problems.append(f"{early} of {len(times)} are before 1990 (not unix seconds?)")
        if late:
            hint = " (milliseconds?)" if np.median(times) > 1e11 else ""
            problems.append(f"{late} of {len(times)} are in the future{hint}")
        same_user = np.ones(len(times) - 1, dtype=bool)
        same_user[offsets[1:-1] - 1] = False  # a user's first event does not tie with the previous user's last
        ties = int((np.diff(times) == 0)[same_user].sum())
        pairs = int(same_user.sum())
        if pairs and ties > TIE_SHARE * pairs:
            problems.append(f"{ties} of {pairs} consecutive events of a user share their timestamp "
                            "(those keep file order)")
    return "timestamps: " + "; ".join(problems) if problems else None
