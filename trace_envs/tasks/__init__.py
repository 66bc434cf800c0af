"""Task families, registered by name on import."""

from trace_envs.tasks import customer_service, multi_step, precondition, structured_data, tau2, tool_calling  # noqa: F401
from trace_envs.tasks.base import CAPABILITIES, FAMILIES, Call, Request, Task, UserProfile, get_family

__all__ = ["CAPABILITIES", "FAMILIES", "Call", "Request", "Task", "UserProfile", "get_family"]
