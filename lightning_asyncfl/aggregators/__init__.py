"""Server-side aggregation rules. Point ``server.aggregator._target_`` at any subclass of
:class:`AsyncAggregator`, including your own."""

from lightning_asyncfl.aggregators.asyncfeded import AsyncFedED
from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ca2fl import CA2FL
from lightning_asyncfl.aggregators.fadas import FADAS
from lightning_asyncfl.aggregators.fedasync import FedAsync
from lightning_asyncfl.aggregators.fedat import FedAT
from lightning_asyncfl.aggregators.fedavg import FedAvg
from lightning_asyncfl.aggregators.fedbuff import FedBuff
from lightning_asyncfl.aggregators.fedopt import AdaptiveFedOpt, FedAdagrad, FedAdam, FedAvgM, FedOpt, FedYogi
from lightning_asyncfl.aggregators.reducers import Krum, Mean, Median, Reducer, TrimmedMean, make_reducer
from lightning_asyncfl.aggregators.scaffold import Scaffold
from lightning_asyncfl.aggregators.staleness import Constant, Hinge, Polynomial, Staleness, make_staleness

__all__ = [
    "AdaptiveFedOpt",
    "AsyncAggregator",
    "AsyncFedED",
    "CA2FL",
    "Constant",
    "FADAS",
    "FedAT",
    "FedAdagrad",
    "FedAdam",
    "FedAsync",
    "FedAvg",
    "FedAvgM",
    "FedBuff",
    "FedOpt",
    "FedYogi",
    "Hinge",
    "Krum",
    "Mean",
    "Median",
    "Polynomial",
    "Reducer",
    "Scaffold",
    "Staleness",
    "TrimmedMean",
    "make_reducer",
    "make_staleness",
]
