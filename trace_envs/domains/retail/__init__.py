"""The retail domain: τ²-bench retail semantics over seeded synthetic databases."""

from trace_envs.domains.retail.tools import RETAIL_POLICY, RETAIL_TOOLS, make_retail_domain

__all__ = ["RETAIL_POLICY", "RETAIL_TOOLS", "make_retail_domain"]
