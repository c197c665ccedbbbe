"""Picard iterations over the whole grid, and their quasi-Newton acceleration.

On a grid ``t_0 < ... < t_N`` (or decreasing), one propagator step per interval is a map
``x_{j+1} = Phi_j(x_j)``. The serial solve applies the maps one after the other. A Picard-family
iteration evaluates ``Phi_j(X_j)`` at every point of a window ``[b, e)`` in ONE batched round
and updates the trajectory by the linearised recurrence (a scan, no evaluations)::

    X'_b = X_b,    X'_{j+1} = Phi_j(X_j) + A_j (X'_j - X_j)

``A_j = I`` is Picard iteration (waveform relaxation; ParaDiGMS for diffusion), ``A_j`` the
Jacobian of ``Phi_j`` is Newton's method (DEER), and a secant estimate of it in between is a
quasi-Newton method (:class:`Secant`). Whatever ``A_j``, the front ``X'_{b+1} = Phi_b(X_b)`` is
exact, so the iteration never needs more than ``N`` rounds and equals :func:`pint.serial` then.

Strategies, each an object: the Jacobian model (:class:`Identity`; :class:`Secant`, one
factor per step and problem; :class:`DiagonalSecant`, one per state component;
:class:`Anderson`, triangular Anderson acceleration of any of them, after ParaTAA), the
initial guess (:class:`Constant`, :class:`Tangent`, which with a sliding window also
re-predicts the points beyond the window), the acceptance rule (:class:`ExactFront`: only the
exact front is final and the problems stop by the stopping rule on the whole change;
:class:`Freeze`: ParaDiGMS's acceptance of every front point whose change is below a tolerance,
cheaper on smooth flows but able to lock in wrong states on expanding ones; ``stop=True``
adds the stopping rule once the window reaches the end).

The package holds one module per kind of strategy: :mod:`~.jacobians` (the
:class:`JacobianModel` protocol, :class:`Identity`, :class:`Secant`, :class:`DiagonalSecant`),
:mod:`~.anderson` (:class:`Anderson`), :mod:`~.initial` (:class:`InitialGuess`,
:class:`Constant`, :class:`Tangent`), :mod:`~.acceptance` (:class:`Acceptance`, which
returns a :class:`Verdict` on a :class:`Window`; :class:`ExactFront`, :class:`Freeze`), and
:mod:`~.solver` (:func:`picard`). Over a :class:`pint.transport.Distributed` transport the rows
of every iteration are shared out over the ranks and gathered; every rank then applies the same
update, so the result equals the single process's bit for bit
(:func:`pint.distributed.picard`).
"""

from .acceptance import Acceptance, ExactFront, Freeze, PointNorm, Verdict, Window
from .anderson import Anderson, AndersonMixer
from .initial import Constant, Extrapolate, InitialGuess, Tangent
from .jacobians import DiagonalSecant, Identity, JacobianModel, Mixer, Secant
from .solver import Picard, picard

__all__ = [
    "Acceptance",
    "Anderson",
    "AndersonMixer",
    "Constant",
    "DiagonalSecant",
    "ExactFront",
    "Extrapolate",
    "Freeze",
    "Identity",
    "InitialGuess",
    "JacobianModel",
    "Mixer",
    "Picard",
    "PointNorm",
    "Secant",
    "Tangent",
    "Verdict",
    "Window",
    "picard",
]
