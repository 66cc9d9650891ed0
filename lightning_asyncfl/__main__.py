"""``python -m lightning_asyncfl [overrides]``: the Hydra entry point; the work is in :func:`run`."""

from __future__ import annotations

import errno
import logging
import signal
import sys

import hydra
from omegaconf import DictConfig

from lightning_asyncfl.api import check_optimized_metric, objective
from lightning_asyncfl.errors import ConfigError, RunFailed
from lightning_asyncfl.executors.processes import prestart
from lightning_asyncfl.run import run

_first_run = True


@hydra.main(config_path="pkg://lightning_asyncfl.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one experiment and return ``summary[optimized_metric]`` (what an Optuna sweep maximises);
    a bad config exits with code 2 and one clear message, a run that cannot go on (no progress) with 1,
    Ctrl-C with 130 and SIGTERM with 143 once every worker has stopped, a full disk with 1 and a message."""
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) must not bury the message that says so
    global _first_run
    if _first_run:  # nothing has computed yet in this process: worker processes may be forked from it (the zygote)
        _first_run = False
        prestart(cfg.get("executor"))
    try:
        check_optimized_metric(cfg)  # before training: a typo must not cost a whole run
        summary = run(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}): every worker stopped; results so far are in the run directory", file=sys.stderr)
        raise SystemExit(128 + signum) from None
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: the disk is full ({error}); the files written before it filled up (the last checkpoint, summary.json) are kept", file=sys.stderr)
        raise SystemExit(1) from None
    return objective(cfg, summary)


if __name__ == "__main__":
    main()
