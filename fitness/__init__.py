"""Fitness suites: what a merged candidate is scored on.

A suite is built once per evaluator from the ``fitness:`` section of a config (:func:`build_suite`), then
called on the evaluator's resident model after every in-place merge. Built in: ``lm_eval``
(lm-evaluation-harness tasks, bundled offline ones included), ``accuracy`` (classification),
``perplexity`` (local text), ``callable`` (a user function) and ``composite`` (several of these, weighted
or as Pareto objectives). :func:`evaluate_safely` turns a suite's exception or NaN into a failed
evaluation. This package imports nothing above it (no population, strategies or distributed code).
"""

from fitness.accuracy import AccuracyConfig, AccuracySuite
from fitness.base import FitnessConfig, FitnessResult, FitnessSuite
from fitness.composite import CompositeConfig, CompositeSuite
from fitness.harness import LmEvalConfig, LmEvalSuite
from fitness.perplexity import PerplexityConfig, PerplexitySuite
from fitness.registry import FITNESS, build_suite, register_suite, suite_config
from fitness.safety import evaluate_safely
from fitness.user_callable import CallableConfig, CallableSuite

__all__ = [
    "FITNESS",
    "AccuracyConfig",
    "AccuracySuite",
    "CallableConfig",
    "CallableSuite",
    "CompositeConfig",
    "CompositeSuite",
    "FitnessConfig",
    "FitnessResult",
    "FitnessSuite",
    "LmEvalConfig",
    "LmEvalSuite",
    "PerplexityConfig",
    "PerplexitySuite",
    "build_suite",
    "evaluate_safely",
    "register_suite",
    "suite_config",
]
