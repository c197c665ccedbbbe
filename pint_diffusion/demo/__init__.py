"""The main job: what parallel-in-time sampling buys, on the bundled digits model.

Every sampler of :func:`samplers` (serial DDIM, then pipelined SRDS, sliding-window Picard and
quasi-Newton Picard at their automatic defaults) samples the same noise in two regimes:

- **latency**: one sample per call, the wall clock of that call (median of a few repeats,
  the samplers interleaved so that they see the same machine load). This is what the
  parallel samplers exist for: they trade more model evaluations for fewer sequential ones.
- **throughput**: every class with several seeds in one batch, wall clock per sample. Serial
  sampling batches the samples instead, and the parallel samplers' extra evaluations cost
  real time wherever a model call's cost grows with its rows (a small CPU); where a batched
  call costs about as much as one sample's (a GPU, up to its capacity) they come for free.
  The automatic window sees that in the measured cost curve and may run serially.

:func:`run_demo` (in :mod:`.measure`) returns the rows of both tables (:class:`DemoRow`) and the
points of the latency-against-batch sweep (:class:`~pint_diffusion.demo.results.Point`) as a
:class:`DemoResult` (:mod:`.results`), and writes into the output folder ``results.json``, the
sample grids, SRDS's refinement figure and residual plot, and ``latency_vs_batch.png``
(:mod:`.figures`: wall clock per sample against samples per call: where the curves cross answers
"when should I sample in parallel"). :func:`format_tables` and :func:`summary` (:mod:`.report`)
turn the result into the printed report. The default run (:data:`DEFAULT_STEPS`,
:data:`DEFAULT_SWEEP`) takes about 2 minutes on a 2-core CPU (4 under load); ``--full`` adds the
1000-step runs (:data:`FULL_STEPS`, :data:`FULL_SWEEP`). """

from .figures import latency_figure, residual_figure, save_figure, save_refinement
from .measure import (
    DEFAULT_STEPS,
    DEFAULT_SWEEP,
    FULL_STEPS,
    FULL_SWEEP,
    DemoSampler,
    machine_name,
    run_demo,
    samplers,
)
from .report import crossovers, format_table, format_tables, summary
from .results import LATENCY, REFERENCE, THROUGHPUT, DemoResult, DemoRow, Point

__all__ = [
    "DEFAULT_STEPS",
    "DEFAULT_SWEEP",
    "FULL_STEPS",
    "FULL_SWEEP",
    "LATENCY",
    "REFERENCE",
    "THROUGHPUT",
    "DemoResult",
    "DemoRow",
    "DemoSampler",
    "Point",
    "crossovers",
    "format_table",
    "format_tables",
    "latency_figure",
    "machine_name",
    "residual_figure",
    "run_demo",
    "samplers",
    "save_figure",
    "save_refinement",
    "summary",
]
