"""``python -m lightning_asyncfl [overrides]``: the Hydra entry point; the work is in :func:`run`."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lightning_asyncfl.api import check_optimized_metric, objective
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import run


@hydra.main(config_path="pkg://lightning_asyncfl.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one experiment and return ``summary[optimized_metric]`` (what an Optuna sweep maximises);
    a bad config exits with code 2 and one clear message, Ctrl-C with 130 once every worker has stopped."""
    try:
        check_optimized_metric(cfg)  # before training: a typo must not cost a whole run
        summary = run(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: every worker stopped; results so far are in the run directory", file=sys.stderr)
        raise SystemExit(130) from None
    return objective(cfg, summary)


if __name__ == "__main__":
    main()
