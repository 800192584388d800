"""secagg inside Flower (flwr 1.41; ``pip install secagg[flower]``).

Two lines for a Flower app that used Flower's SecAgg+::

    fit_workflow = SecAggWorkflow(clipping_range=8.0, max_weight=1000.0, timeout=60)
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, context)      # server
    ClientApp(client_fn=client_fn, mods=[secagg_mod])                # clients

and for a Message-API strategy, ``SecAggStrategy(FedAvg(...)).start(grid, arrays, num_rounds)``.
The wire format inside Flower messages is in SPEC section 16.
"""

from secagg.flower.layout import Layout
from secagg.flower.mod import make_secagg_mod, secagg_mod
from secagg.flower.workflow import (
    DPOptions,
    SecAggStrategy,
    SecAggWorkflow,
    SecureAggregation,
    SecureRoundOutcome,
    build_config,
    report_accuracy,
    run_secure_round,
)

__all__ = [
    "DPOptions",
    "Layout",
    "SecAggStrategy",
    "SecAggWorkflow",
    "SecureAggregation",
    "SecureRoundOutcome",
    "build_config",
    "make_secagg_mod",
    "report_accuracy",
    "run_secure_round",
    "secagg_mod",
]
