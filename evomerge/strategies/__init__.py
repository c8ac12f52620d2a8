"""Built-in search strategies; importing this package registers them (see :func:`get_strategy`)."""

from evomerge.strategies import cmaes, layerwise_zo, m2n2, map_pareto, optuna_search, random_search
from evomerge.strategies.base import STRATEGIES, Strategy, StrategyConfig, get_strategy, register_strategy

__all__ = [
    "STRATEGIES",
    "Strategy",
    "StrategyConfig",
    "cmaes",
    "get_strategy",
    "layerwise_zo",
    "m2n2",
    "map_pareto",
    "optuna_search",
    "random_search",
    "register_strategy",
]
