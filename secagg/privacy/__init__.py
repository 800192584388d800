"""The privacy layer: client-side clipping and distributed discrete DP noise that survive
quantisation into the ring, privacy accounting, and plausibility checks on the aggregate."""

from secagg.privacy.accounting import Accountant, Accounting, Mechanism, gaussian_epsilon
from secagg.privacy.budget import BudgetState, BudgetSummary, population_budget
from secagg.privacy.checks import CheckReport, CheckResult, PlausibilityChecks
from secagg.privacy.encoder import DPAggregate, DPDecoder, DPEncoder, DPPlan, PrivacyBudget

__all__ = [
    "Accountant", "Accounting", "BudgetState", "BudgetSummary", "CheckReport", "CheckResult", "DPAggregate", "DPDecoder", "DPEncoder", "DPPlan", "Mechanism",
    "PlausibilityChecks", "PrivacyBudget", "gaussian_epsilon", "population_budget",
]
