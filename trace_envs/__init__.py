"""trace_envs: capability-targeted Gymnasium text environments built from JSON specs.

>>> import gymnasium as gym
>>> env = gym.make("trace/precondition-v0")
>>> obs, info = env.reset(seed=0)

Pure Python: never imports torch, transformers or trace_agents.
"""

from trace_envs.actions import parse_action, say, tool_call
from trace_envs.env import TraceEnv
from trace_envs.errors import RegistrationError, ResetNeeded, SpecError, ToolError, TraceError
from trace_envs.oracle import OraclePolicy
from trace_envs.registration import make, register_envs, register_spec, registered_ids
from trace_envs.spec import TraceSpec, load_spec
from trace_envs.tasks import CAPABILITIES

register_envs()

__version__ = "0.1.0"
__all__ = [
    "CAPABILITIES",
    "OraclePolicy",
    "RegistrationError",
    "ResetNeeded",
    "SpecError",
    "ToolError",
    "TraceEnv",
    "TraceError",
    "TraceSpec",
    "load_spec",
    "make",
    "parse_action",
    "register_envs",
    "register_spec",
    "registered_ids",
    "say",
    "tool_call",
]
