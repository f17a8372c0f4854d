"""The pipeline of one run, start to end: expand the grid, preflight every input, execute, record.

``launch/`` distributes specs to executors and imports this package; this package never imports
``launch/``.
"""

from uss_bench.pipeline.env import RunEnv
from uss_bench.pipeline.execute import build_method, environment, execute_spec, run_inline
from uss_bench.pipeline.expand import default_backbone, expand_specs
from uss_bench.pipeline.preflight import preflight

__all__ = [
    "RunEnv", "build_method", "default_backbone", "environment", "execute_spec", "expand_specs", "preflight",
    "run_inline",
]
