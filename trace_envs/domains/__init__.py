"""Domains (worlds): registered by name. ``retail`` is built in."""

from trace_envs.domains.retail import make_retail_domain
from trace_envs.world import domain_names, get_domain, register_domain

register_domain("retail", make_retail_domain)

__all__ = ["domain_names", "get_domain", "register_domain"]
