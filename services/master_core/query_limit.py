"""The event log's query budgets: `shared.query_limit` (the site controller's log is asked the
same way), under the name older code imports them by."""

from shared.query_limit import (
    BUDGETS,
    MAX_REQUESTERS,
    THIRD_PARTY_BUDGET,
    QueryBudget,
    QueryLimiter,
    budget_of,
)

__all__ = [
    "BUDGETS",
    "MAX_REQUESTERS",
    "THIRD_PARTY_BUDGET",
    "QueryBudget",
    "QueryLimiter",
    "budget_of",
]
