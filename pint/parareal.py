"""The Parareal iteration, with the batched and the pipelined schedule.

With slice boundaries ``t[0], ..., t[N]``, a coarse propagator ``G`` and a fine
propagator ``F``, iteration ``k + 1`` computes

    ``U[n+1]^{k+1} = G(U[n]^{k+1}) + F(U[n]^k) - G(U[n]^k)``

after an initial coarse sweep ``U[n+1]^0 = G(U[n]^0)`` (iteration 0). After
iteration ``k`` the boundaries ``0..k`` equal the serial fine solution, so they are
carried over unchanged and only slices ``n >= k`` are propagated again: the fine
batch shrinks every iteration, and ``N`` iterations reproduce the serial fine solve.

Every evaluation of ``f`` is batched: the rows of all propagations that are running
at the same time go to ``f`` in one call (see :mod:`pint.propagators`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from numbers import Real

import torch
from torch import Tensor

from ._rounds import NonFiniteError, Rounds, Task, VectorField
from .propagators import Propagator, slice_depths
from .solution import Solution, Stats

__all__ = ["NonFiniteError", "parareal", "predicted_depth"]

Norm = Callable[[Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]


def max_abs_norm(difference: Tensor) -> Tensor:
    """The default residual norm: the largest absolute entry of the difference."""
    return difference.abs().max()


def parareal(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    coarse: Propagator,
    fine: Propagator,
    tol: float = 1e-6,
    max_iters: int | None = None,
    norm: Norm | None = None,
    pipelined: bool = False,
    vectorized: bool = False,
    store_iterates: bool = False,
    independent: bool = False,
    callback: Callback | None = None,
) -> Solution:
    """Solve ``dy/dt = f(t, y)``, ``y(t[0]) = y0``, by Parareal iterations.

    Args:
        f: the vector field in torchdiffeq's convention, ``f(t, y) -> dy/dt``.
        y0: the initial state, any shape.
        t: the slice boundaries, 1-D with at least 2 points, strictly increasing or
            strictly decreasing; same dtype and device as ``y0``.
        coarse: the cheap propagator ``G`` (e.g. ``pint.RK4(1)``).
        fine: the accurate propagator ``F`` (e.g. ``pint.RK4(100)``); the result
            converges to the serial solve with ``F`` on every slice.
        tol: stop when the residual, the change of the boundary states between two
            iterations measured by ``norm``, is at most ``tol``.
        max_iters: the most iterations after the initial coarse sweep; defaults to
            ``N = len(t) - 1``, after which the result *is* the serial fine solution.
        norm: maps the change of all boundary states of one problem, shape
            ``(N + 1, *state_shape)``, to a scalar. Defaults to the largest absolute
            entry (the max norm), so ``tol`` is an absolute tolerance in the units of ``y``.
        pipelined: use the pipelined schedule of SRDS: the fine propagation of a slice
            starts as soon as its initial state exists, instead of after the whole
            coarse sweep. Same iterates, shorter critical path.
        vectorized: ``False`` (default): ``f`` is written for one state and pint
            vectorizes it over rows with :func:`torch.func.vmap`. ``True``: ``f``
            already takes ``t`` of shape ``(R,)`` and ``y`` of shape ``(R, *state_shape)``.
        store_iterates: keep the boundary states after every iteration in
            :attr:`Solution.iterates`.
        independent: the leading axis of ``y0`` indexes ``B`` independent problems
            (e.g. a batch of samples). Each has its own residual and stops iterating,
            leaving the batch, as soon as it converges. ``f`` then sees one problem's
            state per row (``state_shape = y0.shape[1:]``) and is called as
            ``f(t, y, index)``, where ``index`` holds each row's problem (its position
            in ``y0``), so that per-problem data (e.g. conditioning) can be looked up.
        callback: called after each iteration ``k`` (0 is the coarse sweep) as
            ``callback(k, ys, residual)``, with the current boundary states (like
            :attr:`Solution.ys`) and the residual of each problem (shape ``()``, or
            ``(B,)`` with ``independent``; NaN where undefined).

    Returns:
        A :class:`pint.Solution` with the states at ``t``, the iteration history and
        the cost of the solve.

    Raises:
        TypeError: ``y0`` or ``t`` is not a floating tensor, or ``coarse``/``fine`` is
            not a :class:`pint.Propagator`.
        ValueError: inconsistent shapes, dtypes, devices or options.
        pint.NonFiniteError: a state or an evaluation of ``f`` is not finite (the
            message names the iteration and slice).

    Example:
        >>> import torch, pint
        >>> t = torch.linspace(0, 1, 11, dtype=torch.float64)
        >>> y0 = torch.tensor([1.0], dtype=torch.float64)
        >>> sol = pint.parareal(lambda t, y: -y, y0, t, coarse=pint.Euler(1), fine=pint.RK4(20))
        >>> bool(torch.allclose(sol.ys[-1], torch.exp(-t[-1:]), atol=1e-6))
        True
    """
    max_iters = _check_inputs(y0, t, coarse, fine, tol, max_iters, norm, independent)
    n_slices = len(t) - 1
    states = y0 if independent else y0.unsqueeze(0)
    solver = _Parareal(
        f=f if vectorized else _vmapped(f),
        y0=states,
        t=t,
        coarse=coarse,
        fine=fine,
        tol=float(tol),
        max_iters=min(max_iters, n_slices),
        norm=norm,
        pipelined=pipelined,
        store_iterates=store_iterates,
        callback=callback,
        squeeze=not independent,
    )
    return solver.run()


def predicted_depth(
    n_slices: int,
    iterations: int,
    coarse_depth: int | Sequence[int],
    fine_depth: int | Sequence[int],
    pipelined: bool,
) -> int:
    """The depth (``sequential_nfe``) of ``iterations`` Parareal iterations.

    With ``c`` the coarse depth and ``f`` the fine depth of a slice (one int for all
    slices, or one per slice), the time at which boundary ``n`` of iteration ``k`` is
    ready is ``t(n, k)``, with ``t(0, k) = 0`` and ``t(n + 1, 0) = t(n, 0) + c``. The
    pipelined schedule starts a fine propagation as soon as its initial state exists::

        t(k + 1, k + 1) = t(k, k) + f
        t(n + 1, k + 1) = max(t(n, k + 1) + c, t(n, k) + f)   for n > k

    (DESIGN 2.4 with ``f = m c``). The batched schedule starts the fine propagations of
    iteration ``k + 1`` as one batch once iteration ``k`` is complete, at ``T(k) = t(N, k)``;
    the batch ends with its deepest slice: ``t(k + 1, k + 1) = T(k) + max f`` and
    ``t(n + 1, k + 1) = t(n, k + 1) + c``. The depth is ``t(N, iterations)``.
    """
    c = [coarse_depth] * n_slices if isinstance(coarse_depth, int) else list(coarse_depth)
    f = [fine_depth] * n_slices if isinstance(fine_depth, int) else list(fine_depth)
    ready = [0] * (n_slices + 1)
    for n in range(n_slices):
        ready[n + 1] = ready[n] + c[n]
    for k in range(iterations):
        new = list(ready)
        if pipelined:
            new[k + 1] = ready[k] + f[k]
            for n in range(k + 1, n_slices):
                new[n + 1] = max(new[n] + c[n], ready[n] + f[n])
        else:
            new[k + 1] = ready[n_slices] + max(f[k:])
            for n in range(k + 1, n_slices):
                new[n + 1] = new[n] + c[n]
        ready = new
    return ready[n_slices]


def _check_inputs(
    y0: Tensor, t: Tensor, coarse: Propagator, fine: Propagator, tol: float,
    max_iters: int | None, norm: Norm | None, independent: bool,
) -> int:
    """Validate the arguments of a Parareal solve; returns ``max_iters`` resolved."""
    _check_tensors(y0, t)
    for name, prop in (("coarse", coarse), ("fine", fine)):
        if not isinstance(prop, Propagator):
            raise TypeError(
                f"{name} must be a pint.Propagator (an object with a propagate(t0, t1, y0) "
                f"generator), e.g. pint.RK4(1); got {type(prop).__name__}"
            )
    if not isinstance(tol, Real) or not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if max_iters is None:
        max_iters = len(t) - 1
    elif isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 0:
        raise ValueError(f"max_iters must be a non-negative integer or None, got {max_iters!r}")
    if norm is not None and not callable(norm):
        raise TypeError(f"norm must be callable or None, got {type(norm).__name__}")
    if independent and y0.ndim == 0:
        raise ValueError("independent=True needs y0 with a leading batch axis, got a 0-d tensor")
    return max_iters


def _check_tensors(y0: Tensor, t: Tensor) -> None:
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point torch.Tensor, got {_describe(y0)}")
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError(f"t must be a floating-point torch.Tensor, got {_describe(t)}")
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f"t must be 1-D with at least 2 points, got shape {tuple(t.shape)}")
    if t.dtype != y0.dtype or t.device != y0.device:
        raise ValueError(
            f"t and y0 must share dtype and device, got t: {t.dtype} on {t.device}, "
            f"y0: {y0.dtype} on {y0.device}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t must be finite")
    steps = t.diff()
    if not (bool((steps > 0).all()) or bool((steps < 0).all())):
        raise ValueError("t must be strictly increasing or strictly decreasing")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 must be finite")


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__


def _vmapped(f: Callable[..., Tensor]) -> VectorField:
    batched = torch.func.vmap(f)

    def field(*args: Tensor) -> Tensor:
        try:
            return batched(*args)
        except RuntimeError as error:
            error.add_note(
                "pint vectorizes f over rows with torch.func.vmap; if f cannot be vmapped, "
                "write it for a batch of rows (t: (R,), y: (R, *state)) and pass vectorized=True"
            )
            raise

    return field


Outputs = dict[tuple[int, int], Tensor]


def boundary_update(
    m: int, k: int, coarse_out: Outputs, fine_out: Outputs, take: Callable[[Tensor], Tensor]
) -> Tensor | None:
    """Boundary ``m`` of iteration ``k`` from the propagations' outputs, keyed by (slice,
    iteration), or ``None`` while one of its inputs is missing. ``take`` selects the rows of
    the problems still iterating. The Parareal update is
    ``U[m]^k = G(U[m-1]^k) + F(U[m-1]^(k-1)) - G(U[m-1]^(k-1))``; the first new boundary of an
    iteration (``m = k``) is the fine solution itself, exactly, and iteration 0 is the coarse
    sweep."""
    n = m - 1
    if k == 0:
        new = coarse_out.get((n, 0))
        return None if new is None else take(new)
    old_fine = fine_out.get((n, k - 1))
    if old_fine is None:
        return None
    if n == k - 1:
        return take(old_fine)
    new_coarse, old_coarse = coarse_out.get((n, k)), coarse_out.get((n, k - 1))
    if new_coarse is None or old_coarse is None:
        return None
    return take(new_coarse) + (take(old_fine) - take(old_coarse))


class _Parareal:
    """The state of one Parareal solve, driven by the completions of its propagations."""

    def __init__(
        self, *, f: VectorField, y0: Tensor, t: Tensor, coarse: Propagator, fine: Propagator,
        tol: float, max_iters: int, norm: Norm | None, pipelined: bool,
        store_iterates: bool, callback: Callback | None, squeeze: bool,
    ) -> None:
        self.t, self.coarse, self.fine = t, coarse, fine
        self.n = len(t) - 1
        self.tol, self.max_iters, self.norm = tol, max_iters, norm
        self.pipelined, self.callback, self.squeeze = pipelined, callback, squeeze
        self.batch = y0.shape[0]
        self.rounds = Rounds(f, with_index=not squeeze)
        self.active: Tensor | None = None  # sample indices still iterating; None: all
        self.tables: dict[int, Tensor] = {}  # iteration -> boundary states (N+1, B, *state)
        self.coarse_out: dict[tuple[int, int], Tensor] = {}  # (slice, iteration) -> G(U[n]^k)
        self.fine_out: dict[tuple[int, int], Tensor] = {}  # (slice, iteration) -> F(U[n]^k)
        self.formed: dict[int, int] = {}  # iteration -> how many boundaries are formed
        self.result = y0.unsqueeze(0).expand(self.n + 1, *y0.shape).clone()
        self.sample_iterations = torch.zeros(self.batch, dtype=torch.long)
        self.residuals: list[float] = []
        self.iterates: list[Tensor] | None = [] if store_iterates else None
        self.done = False
        self.converged = False

    # -- running -------------------------------------------------------------------
    def run(self) -> Solution:
        start = time.perf_counter()
        table = self.result.clone()
        self.tables[0] = table
        self.formed[0] = 0
        self._form(0, 0, table[0])
        try:
            while not self.done:
                self.rounds.step()
        finally:
            self.rounds.close()
        wall = time.perf_counter() - start
        iterations = int(self.sample_iterations.max())
        c_depth, f_depth = slice_depths(self.coarse, self.t), slice_depths(self.fine, self.t)
        predicted = None
        if c_depth is not None and f_depth is not None:
            predicted = predicted_depth(self.n, iterations, c_depth, f_depth, self.pipelined)
        rows = self.rounds.rows
        stats = Stats(
            nfe=rows["coarse"] + rows["fine"],
            sequential_nfe=self.rounds.rounds,
            coarse_nfe=rows["coarse"],
            fine_nfe=rows["fine"],
            wall_time=wall,
            predicted_sequential_nfe=predicted,
        )
        return Solution(
            ys=self._out(self.result),
            iterations=iterations,
            converged=self.converged,
            residuals=self.residuals,
            stats=stats,
            iterates=self.iterates,
            sample_iterations=None if self.squeeze else self.sample_iterations,
        )

    def _out(self, states: Tensor) -> Tensor:
        return states[:, 0] if self.squeeze else states

    def _take(self, states: Tensor) -> Tensor:
        """The rows of the samples still iterating."""
        return states if self.active is None else states[self.active]

    def _full(self, rows: Tensor, samples: Tensor | None) -> Tensor:
        """Rows computed for ``samples`` as a (B, *state) tensor indexed by sample."""
        if samples is None:
            return rows
        full = rows.new_zeros((self.batch, *rows.shape[1:]))
        return full.index_copy_(0, samples, rows)

    # -- the dependency graph --------------------------------------------------------
    def _form(self, n: int, k: int, value: Tensor) -> None:
        """Boundary ``n`` of iteration ``k`` is known for the active samples."""
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(
                f"the state at slice boundary {n} became non-finite in iteration {k}",
                kind=None, slice=n, iteration=k, evaluation=None,
            )
        table = self.tables.get(k)
        if table is None:  # first boundary of iteration k: carry the exact prefix over
            table = self.tables[k] = self.tables[k - 1].clone()
        if self.active is None:
            table[n] = value
        else:
            table[n].index_copy_(0, self.active, value)
        self.formed[k] = self.formed.get(k, 0) + 1
        if n == self.n:
            self._complete(k)
            return
        self._start("coarse", [n], k)
        if self.pipelined and k < self.max_iters:
            self._start("fine", [n], k)

    def _start(self, kind: str, slices: list[int], k: int) -> None:
        samples = self.active
        propagator = self.coarse if kind == "coarse" else self.fine
        table = self.tables[k]
        y0 = torch.cat([self._take(table[n]) for n in slices]) if len(slices) > 1 else (
            self._take(table[slices[0]])
        )
        rows = len(y0) // len(slices)
        index = torch.tensor(slices, device=self.t.device).repeat_interleave(rows)
        t0, t1 = self.t[index], self.t[index + 1]
        members = samples if samples is not None else torch.arange(rows, device=y0.device)

        def on_done(y1: Tensor) -> None:
            outputs = self.coarse_out if kind == "coarse" else self.fine_out
            for n, part in zip(slices, y1.split(rows), strict=True):
                outputs[n, k] = self._full(part, samples)
            for n in slices:
                if kind == "coarse":
                    self._try_form(n + 1, k)
                self._try_form(n + 1, k + 1)

        self.rounds.start(Task(
            propagation=propagator.propagate(t0, t1, y0), kind=kind, iteration=k,
            slices=index.cpu(), problems=members.repeat(len(slices)), on_done=on_done,
        ))

    def _try_form(self, m: int, k: int) -> None:
        """Form boundary ``m`` of iteration ``k`` if all its inputs are known."""
        if self.done or k > self.max_iters or self.formed.get(k, 0) > m - k or m < k:
            return
        value = boundary_update(m, k, self.coarse_out, self.fine_out, self._take)
        if value is not None:
            self._form(m, k, value)

    def _complete(self, k: int) -> None:
        """Iteration ``k`` has formed all its boundaries: test convergence, go on or stop."""
        table = self.tables[k]
        samples = self.active
        current = self._take(table.transpose(0, 1)).transpose(0, 1)
        residual = torch.full((self.batch,), math.nan, dtype=torch.float64)
        if k > 0:
            change = current - self._take(self.tables[k - 1].transpose(0, 1)).transpose(0, 1)
            res = self._residuals(change)
            if samples is None:
                residual = res
            else:
                residual[samples.cpu()] = res
            self.residuals.append(float(res.max()))
            if not bool(torch.isfinite(res).all()):
                raise ValueError(f"norm returned a non-finite residual in iteration {k}: {res}")
            stopping = (res <= self.tol) | torch.tensor(k >= self.n)
        else:
            stopping = torch.zeros(len(current[0]), dtype=torch.bool)
        if samples is None:
            self.result = table.clone()
        else:
            self.result.index_copy_(1, samples, current)
        self.sample_iterations[self._cpu(samples)] = k
        if self.iterates is not None:
            self.iterates.append(self._out(self.result).clone())
        if self.callback is not None:
            self.callback(k, self._out(self.result), residual[0] if self.squeeze else residual)
        for old in [key for key in self.coarse_out if key[1] < k]:
            del self.coarse_out[old]
        for old in [key for key in self.fine_out if key[1] < k]:
            del self.fine_out[old]
        self.tables.pop(k - 2, None)

        keep = ~stopping
        if k == self.max_iters or not bool(keep.any()):
            self.done = True
            self.converged = (k > 0 and bool(stopping.all())) or k >= self.n
            return
        if not bool(keep.all()):
            positions = keep.nonzero().squeeze(1).to(table.device)
            self.active = positions if samples is None else samples[positions]
        if not self.pipelined:
            self._start("fine", list(range(k, self.n)), k)

    def _cpu(self, samples: Tensor | None) -> Tensor | slice:
        return slice(None) if samples is None else samples.cpu()

    def _residuals(self, change: Tensor) -> Tensor:
        """One residual per active sample; ``change`` has shape (N+1, S, *state)."""
        if self.norm is None:
            return change.abs().transpose(0, 1).flatten(1).amax(1).to("cpu", torch.float64)
        values = [self.norm(change[:, i]) for i in range(change.shape[1])]
        return torch.stack([torch.as_tensor(v) for v in values]).to("cpu", torch.float64)
