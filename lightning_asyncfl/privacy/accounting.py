"""User-level privacy accounting with Opacus' RDP accountant.

Every release that touches client u's data is a Gaussian mechanism with some noise
multiplier σ (noise std / u's largest influence). The accountant keeps, for every client,
how many releases it took part in at each σ, and reports

    ε(δ) = max_u  ε_RDP(δ; the releases of u)

computed by :class:`opacus.accountants.RDPAccountant` (Mironov 2017; Mironov, Talwar,
Zhang 2019) with sample rate q = 1: no amplification by subsampling is claimed, because an
asynchronous schedule does not sample clients by independent coin flips (see
docs/privacy.md). The adjacency is user-level zero-out (one client's every update replaced
by zero), as in Kairouz et al. 2021 (DP-FTRL, https://arxiv.org/abs/2103.00039); a release
a client did not take part in costs it nothing, and composition is adaptive, so the max
over clients bounds the whole run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any



def _rdp_accountant() -> Any:
    try:
        from opacus.accountants import RDPAccountant
    except ImportError as error:  # an optional dependency: only DP runs need it
        raise ImportError("privacy.dp needs Opacus' accountant: pip install 'lightning-asyncfl[privacy]'") from error
    return RDPAccountant()


def rdp_epsilon(history: dict[float, int], delta: float) -> float:
    """ε at ``delta`` of the releases ``{noise multiplier: count}``, from Opacus' RDP accountant (q = 1)."""
    if not history:
        return 0.0
    if any(sigma == 0 for sigma in history):
        return float("inf")
    accountant = _rdp_accountant()
    accountant.history = [(float(sigma), 1.0, int(n)) for sigma, n in sorted(history.items())]
    return float(accountant.get_epsilon(delta=delta))


class UserLevelAccountant:
    """Per-client histories of Gaussian releases and the largest ε over clients.

    Args:
        delta: δ of the reported (ε, δ).
    """

    def __init__(self, delta: float) -> None:
        _rdp_accountant()  # fails now, before training, where Opacus is not installed
        self.delta = float(delta)
        self.histories: dict[int, Counter[float]] = {}
        self._epsilon: dict[int, float] = {}

    def step(self, releases: dict[int, float]) -> None:
        """Record one release per ``{client: noise multiplier}``."""
        for client, sigma in releases.items():
            self.histories.setdefault(int(client), Counter())[float(sigma)] += 1
            self._epsilon[int(client)] = rdp_epsilon(self.histories[int(client)], self.delta)

    def epsilon_after(self, releases: dict[int, float]) -> float:
        """ε if ``releases`` were recorded now (nothing is recorded)."""
        eps = dict(self._epsilon)
        for client, sigma in releases.items():
            history = Counter(self.histories.get(int(client), Counter()))
            history[float(sigma)] += 1
            eps[int(client)] = rdp_epsilon(history, self.delta)
        return max(eps.values(), default=0.0)

    @property
    def epsilon(self) -> float:
        """ε spent so far: the largest over clients (0 before any release)."""
        return max(self._epsilon.values(), default=0.0)

    @property
    def max_releases(self) -> int:
        """Releases of the client that took part in the most."""
        return max((sum(h.values()) for h in self.histories.values()), default=0)

    def state_dict(self) -> dict[str, Any]:
        return {"histories": {c: [[s, n] for s, n in sorted(h.items())] for c, h in sorted(self.histories.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.histories = {int(c): Counter({float(s): int(n) for s, n in h}) for c, h in state["histories"].items()}
        self._epsilon = {c: rdp_epsilon(h, self.delta) for c, h in self.histories.items()}
