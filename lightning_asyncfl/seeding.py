"""Separate, named random streams derived from the run's one seed.

Partitioning, the scheduler's choices, the delays, model initialisation and every job's
local training each draw from their own stream, so changing one (say, the delay model)
never shifts the others, and a job's randomness depends on ``(seed, job id)``
only, never on which worker runs it.
"""

from __future__ import annotations

import numpy as np

PARTITION = 0
SYSTEM = 1  # scheduler choices
JOB = 2
MODEL = 3
DELAY = 4
ATTACK = 5  # which clients are malicious
AVAILABILITY = 6  # check-in order, unavailability windows, dropouts
FAULTS = 7  # injected client faults
DEVICES = 8  # each client's device (compute speed, bandwidths)


def stream(seed: int, *key: int) -> np.random.Generator:
    """A NumPy generator for the stream ``key`` of run ``seed`` (e.g. ``stream(seed, SYSTEM)``)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *key]))


def derive_seed(seed: int, *key: int) -> int:
    """A 63-bit integer seed for stream ``key`` of run ``seed``, for ``torch.Generator``."""
    hi, lo = np.random.SeedSequence([int(seed), *key]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def job_seed(seed: int, job_id: int) -> int:
    """The seed of job ``job_id``'s local training (batch order, dropout, augmentation)."""
    return derive_seed(seed, JOB, job_id)
