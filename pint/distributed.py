"""Parareal, Picard/quasi-Newton and MGRIT over processes and GPUs (``torch.distributed``).

The algorithms are :func:`pint.parareal`'s, :func:`pint.picard`'s and :func:`pint.mgrit`'s
own; :class:`pint.transport.distributed.Distributed` moves the data and knows no algorithm.
Parareal's time slices are spread over the ranks (boundaries sent on to the next rank, the
residual shares of each iteration gathered). For Picard and MGRIT every rank holds the whole
trajectory, and the engine shares out the rows of each round (a window's points, a
relaxation's intervals) and gathers them. Launch with ``torchrun`` (see the docs page
*Distributed Parareal* and the how-to *Several GPUs*)::

    torch.distributed.init_process_group("gloo")  # "nccl" on GPUs
    sol = pint.distributed.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(100))
    sol = pint.distributed.picard(f, y0, t, step=pint.RK4(1), jacobian=pint.Secant())
    sol = pint.distributed.mgrit(f, y0, t, propagator=pint.RK4(1), coarsening=4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

import torch.distributed as dist
from torch import Tensor

from .algorithms.driver import Callback, Norm, StopRule
from .algorithms.mgrit import Cycle, Relaxation
from .algorithms.mgrit import mgrit as _mgrit
from .algorithms.parareal import parareal as _parareal
from .algorithms.picard import Acceptance, InitialGuess, JacobianModel
from .algorithms.picard import picard as _picard
from .propagators import Propagator
from .solution import Solution
from .transport.distributed import Distributed, DistributedError, RankFailed, slice_ranges

__all__ = ["Distributed", "DistributedError", "RankFailed", "mgrit", "parareal", "picard",
           "slice_ranges"]


def parareal(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    coarse: Propagator,
    fine: Propagator,
    tol: float = 1e-6,
    max_iters: int | None = None,
    norm: Norm | None = None,
    stop: StopRule | None = None,
    vectorized: bool = False,
    independent: bool = False,
    max_batch: int | None = None,
    group: dist.ProcessGroup | None = None,
    timeout: float | timedelta = 300.0,
) -> Solution:
    """:func:`pint.parareal` with the time slices spread over the ranks of ``group``.

    Every rank of ``group`` calls this function with the same arguments (``f``, the
    propagators and the norm on every rank; ``y0`` and ``t`` of equal shape and dtype, ``t`` of
    equal values; the initial state is rank 0's ``y0``). Rank ``r`` owns the slices
    ``slice_ranges(N, world_size)[r]``; iterations are pipelined across the ranks (the schedule
    of ``pint.parareal(pipelined=True)``).

    Args:
        f, y0, t, coarse, fine, tol, max_iters, stop, vectorized, independent, max_batch: as in
            :func:`pint.parareal`. With ``independent=True`` each problem stops when it
            converges, exactly as in :func:`pint.parareal`.
        norm: as in :func:`pint.parareal`. With the default (max) norm, each rank sends every
            other rank one scalar per problem per iteration; a custom norm needs the change of
            all boundary states on every rank, so each rank's share is ``(N + 1) *
            y0.numel()`` values.
        group: the process group (default: the default group, from
            ``torch.distributed.init_process_group``). Backend ``gloo`` (CPU tensors; CUDA
            states are staged through the CPU) or ``nccl`` (states on each rank's GPU; pint's
            messages go through a ``gloo`` group over the same ranks, made once, staged
            through the CPU).
        timeout: seconds (or a ``timedelta``) a rank may wait, idle, for a message (a
            boundary, the residuals of an iteration, the results) before it gives up with
            :class:`DistributedError`. A rank that raises tells the others and a rank that
            dies closes its connections, so both stop the others at once; the timeout bounds
            the rest (a rank that hangs). Set it above the longest stretch of computation a
            rank may wait on (e.g. the coarse sweep of all previous ranks).

    Returns:
        On every rank, the same :class:`pint.Solution` as :func:`pint.parareal` (``ys`` equal
        to round-off, bit-equal when ``f`` computes each row independently of the batch it is
        in), with ``iterates=None``. ``stats`` counts the evaluations of all ranks;
        ``sequential_nfe`` is the depth of the dependency graph across the ranks (messages
        count as free), the same as :func:`pint.parareal`'s; ``wall_time`` is this rank's.

    Raises:
        ValueError: invalid arguments on any rank (every rank raises), arguments that differ
            between ranks (shapes, dtypes, ``t``, options), or more ranks than slices.
        RankFailed: another rank raised during the solve (its ``f``, a
            :class:`pint.NonFiniteError`, anything): ``error.rank`` names it and
            ``error.reason`` holds its exception as text. The failing rank raises its own
            exception, after telling the others; they stop as soon as their current round
            of evaluations ends, whether or not its process stays alive.
        DistributedError: a rank died (its connections closed) or did not answer within
            ``timeout``; the other ranks are told.
        pint.NonFiniteError: as in :func:`pint.parareal`, on the rank where it happened (the
            others raise :class:`RankFailed`).

    Example (run with ``torchrun --nproc-per-node 2 script.py``)::

        import torch, torch.distributed as dist, pint, pint.distributed
        dist.init_process_group("gloo")
        t = torch.linspace(0, 1, 9, dtype=torch.float64)
        sol = pint.distributed.parareal(lambda t, y: -y, torch.ones(1, dtype=torch.float64),
                                        t, coarse=pint.Euler(1), fine=pint.RK4(20))
        dist.destroy_process_group()
    """
    device = y0.device if isinstance(y0, Tensor) else None
    transport = Distributed(group, timeout, device)
    return _parareal(f, y0, t, coarse=coarse, fine=fine, tol=tol, max_iters=max_iters,
                     norm=norm, stop=stop, pipelined=True, vectorized=vectorized,
                     independent=independent, max_batch=max_batch, transport=transport)


def picard(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    step: Propagator,
    window: int | None = None,
    tol: float = 1e-6,
    max_iters: int | None = None,
    norm: Norm | None = None,
    stop: StopRule | None = None,
    jacobian: JacobianModel | None = None,
    initial: InitialGuess | None = None,
    acceptance: Acceptance | None = None,
    vectorized: bool = False,
    independent: bool = False,
    store_iterates: bool = False,
    callback: Callback | None = None,
    max_batch: int | None = None,
    group: dist.ProcessGroup | None = None,
    timeout: float | timedelta = 300.0,
) -> Solution:
    """:func:`pint.picard` with each iteration's rows shared out over the ranks of ``group``.

    Every rank holds a replica of ``f`` and the whole trajectory. In every round of
    evaluations (the initial guess's, each step of an iteration's window) rank ``r`` evaluates
    the ``r``-th contiguous share of the rows; the shares are gathered on every rank and every
    rank applies the same update (the recurrence, Anderson's fits, the acceptance and the
    stopping rule run identically on each). So on every rank the result, the iterations, the
    depth and the evaluations equal the single process's, bit for bit when ``f`` computes
    each row independently of the batch it is in. A group of one rank is the single process.

    The other arguments are :func:`pint.picard`'s and must be the same on every rank (``y0``,
    ``t`` and the options are compared up front).

    Args:
        group, timeout: as in :func:`parareal`.

    Returns:
        On every rank, the :class:`pint.Solution` of :func:`pint.picard`; ``stats`` counts the
        evaluations of all ranks, ``sequential_nfe`` is the depth (the rounds), ``calls`` and
        ``wall_time`` are this rank's.

    Raises:
        ValueError: invalid arguments on any rank (every rank raises), or ``y0``, ``t`` or
            options that differ between ranks; refused before any evaluation.
        RankFailed: another rank raised during the solve; ``error.rank`` names it.
        DistributedError: a rank died or did not answer within ``timeout``.

    Example (run with ``torchrun --nproc-per-node 2 script.py``)::

        import torch, torch.distributed as dist, pint, pint.distributed
        dist.init_process_group("gloo")
        t = torch.linspace(0, 1, 33, dtype=torch.float64)
        sol = pint.distributed.picard(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t,
                                      step=pint.RK4(1), jacobian=pint.Secant(), tol=1e-10)
        dist.destroy_process_group()
    """
    transport = Distributed(group, timeout)
    return _picard(f, y0, t, step=step, window=window, tol=tol, max_iters=max_iters, norm=norm,
                   stop=stop, jacobian=jacobian, initial=initial, acceptance=acceptance,
                   vectorized=vectorized, independent=independent,
                   store_iterates=store_iterates, callback=callback, max_batch=max_batch,
                   transport=transport)


def mgrit(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    propagator: Propagator,
    coarsening: int | Sequence[int] = 2,
    levels: int | None = None,
    relaxation: Relaxation | None = None,
    cycle: Cycle | None = None,
    tol: float = 1e-7,
    max_iters: int | None = None,
    norm: Norm | None = None,
    vectorized: bool = False,
    coarse_propagator: Propagator | Sequence[Propagator] | None = None,
    store_iterates: bool = False,
    callback: Callback | None = None,
    group: dist.ProcessGroup | None = None,
    timeout: float | timedelta = 300.0,
) -> Solution:
    """:func:`pint.mgrit` with each round's rows shared out over the ranks of ``group``.

    Every rank holds a replica of ``f`` and every level's states. The rows of a round are the
    intervals of a relaxation sweep (F: one row per C-interval; C and the restriction: one
    per C-point), so rank ``r`` evaluates the ``r``-th contiguous share of them; the shares
    are gathered on every rank and every rank applies the same update (the FAS right-hand
    sides, the coarsest level's serial solve, the correction, the residual). So on every rank
    the result, the iterations, the depth and the evaluations equal the single process's, bit
    for bit when ``f`` computes each row independently of the batch it is in. The coarsest
    solve has one row per round: one rank computes it while the others wait, as in one
    process. Each round moves the round's rows between all ranks, so the speedup grows with
    the cost of a row (a PDE's right-hand side, a network) against the cost of a message.

    The other arguments are :func:`pint.mgrit`'s and must be the same on every rank (``y0``,
    ``t`` and the options are compared up front).

    Args:
        group, timeout: as in :func:`parareal`.

    Returns:
        On every rank, the :class:`pint.Solution` of :func:`pint.mgrit`; ``calls`` and
        ``wall_time`` are this rank's.

    Raises:
        ValueError: invalid arguments on any rank (every rank raises), or ``y0``, ``t`` or
            options that differ between ranks; refused before any evaluation.
        RankFailed: another rank raised during the solve; ``error.rank`` names it.
        DistributedError: a rank died or did not answer within ``timeout``.

    Example (run with ``torchrun --nproc-per-node 2 script.py``)::

        import torch, torch.distributed as dist, pint, pint.distributed
        dist.init_process_group("gloo")
        t = torch.linspace(0, 1, 65, dtype=torch.float64)
        sol = pint.distributed.mgrit(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t,
                                     propagator=pint.RK4(1), coarsening=4, tol=1e-10)
        dist.destroy_process_group()
    """
    transport = Distributed(group, timeout)
    return _mgrit(f, y0, t, propagator=propagator, coarsening=coarsening, levels=levels,
                  relaxation=relaxation, cycle=cycle, tol=tol, max_iters=max_iters, norm=norm,
                  vectorized=vectorized, coarse_propagator=coarse_propagator,
                  store_iterates=store_iterates, callback=callback, transport=transport)
