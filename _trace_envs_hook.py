"""Start-up hook: register trace_envs' ids when gymnasium is imported.

Installed as ``trace_envs_gymnasium.pth``. Gymnasium 1.x dropped entry-point plugins, so
without this ``gym.make("trace/precondition-v0")`` would need ``import trace_envs``
first. Until gymnasium is imported the hook is one small finder on ``sys.meta_path``
(it imports nothing at start-up); it never breaks an import: a failure is a warning.
"""

import sys


class _AfterGymnasium:
    """A meta-path finder that wraps gymnasium's loader to register our envs after it."""

    def find_spec(self, name, path=None, target=None):
        if name != "gymnasium":
            return None
        sys.meta_path.remove(self)  # one shot; also avoids recursion below
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            try:
                from trace_envs.registration import register_envs

                register_envs()
            except Exception as exc:  # never break `import gymnasium`
                import warnings

                warnings.warn(f"trace_envs could not register its environments: {exc!r}", stacklevel=2)

        spec.loader.exec_module = exec_module
        return spec


if "gymnasium" not in sys.modules:
    sys.meta_path.insert(0, _AfterGymnasium())
