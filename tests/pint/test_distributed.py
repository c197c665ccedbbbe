"""Distributed Parareal (pint.distributed) and SRDS over torch.distributed, gloo on the CPU.

Each test spawns its own process group (torch.multiprocessing, start method "spawn"); the
rendezvous goes through a file in the test's tmp_path, so parallel pytest workers cannot
collide on a port. Every worker saves what it returned or raised; the asserts run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import conditioned_toy, lotka, refused, spawn, values

import pint
import pint.distributed
from pint import problems

F64 = torch.float64
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


# -- the workers (module level, so that spawned processes can import them) ------------------
RATES = torch.tensor([-0.1, -1.0, -4.0], dtype=F64)


def indexed_field(t, y, index):  # independent problems, each with its own rate
    return RATES[index][:, None] * y + torch.sin(t)[:, None]


def final_rms(change):
    return change[-1].pow(2).mean().sqrt()


def solve_cases(rank, world):
    """Every configuration once in one group: pint.distributed against pint.parareal."""
    p, y0, t = lotka()
    common = dict(coarse=pint.Heun(1), fine=pint.RK4(8), vectorized=True)
    out = {}
    for name, kw in {"tol": dict(tol=1e-8), "exact": dict(tol=0.0), "coarse": dict(max_iters=0),
                     "capped": dict(tol=0.0, max_iters=3)}.items():
        sol = pint.distributed.parareal(p.f, y0, t, **common, **kw)
        ref = pint.parareal(p.f, y0, t, pipelined=True, **common, **kw)
        out[name] = (sol, ref)
    out["serial"] = pint.serial(p.f, y0, t, method=common["fine"], vectorized=True).ys
    y0b, tb = torch.ones(3, 2, dtype=F64), torch.linspace(0, 4, 17, dtype=F64)
    for name, norm in (("independent", None), ("independent-norm", final_rms)):
        kw = dict(coarse=pint.Euler(1), fine=pint.RK4(10), tol=1e-9, vectorized=True,
                  independent=True, norm=norm)
        out[name] = (pint.distributed.parareal(indexed_field, y0b, tb, **kw),
                     pint.parareal(indexed_field, y0b, tb, pipelined=True, **kw))
    # unvectorized f (vmap), float32, backwards in time, matrix state
    a = torch.tensor([[0.3, -1.0], [1.0, 0.1]])
    y32, t32 = torch.randn(2, 2, generator=torch.Generator().manual_seed(0)), torch.linspace(
        2.0, 0.0, 13)

    def f(t, y):
        return torch.tanh(a @ y) * torch.cos(t)

    kw = dict(coarse=pint.Euler(1), fine=pint.Midpoint(4), tol=0.0)
    out["vmap"] = (pint.distributed.parareal(f, y32, t32, **kw),
                   pint.parareal(f, y32, t32, pipelined=True, **kw))
    try:  # a propagator that runs its solver in a thread of its own
        import torchdiffeq  # noqa: F401
    except ImportError:
        return out
    kw = dict(coarse=pint.RK4(1), fine=pint.Torchdiffeq("dopri5", rtol=1e-8, atol=1e-10),
              tol=1e-9, vectorized=True)
    out["torchdiffeq"] = (pint.distributed.parareal(p.f, y0, t, **kw),
                          pint.parareal(p.f, y0, t, pipelined=True, **kw))
    return out


def check_solution(sol, ref, fixed_cost=True):
    """``fixed_cost``: every propagation of one slice costs the same number of evaluations,
    so that the distributed run, which may waste speculative work but never skips any, makes
    at least as many (an adaptive solver's cost depends on the state it starts from, and the
    speculative states depend on the timing of messages)."""
    assert torch.equal(sol.ys, ref.ys)  # bit-equal: same arithmetic, row by row
    assert sol.iterations == ref.iterations
    assert sol.converged == ref.converged
    assert sol.residuals == ref.residuals
    assert sol.stats.predicted_sequential_nfe == ref.stats.predicted_sequential_nfe
    # the depth of the dependency graph, not the receiving rank's own rounds of other work
    assert sol.stats.sequential_nfe == ref.stats.sequential_nfe
    if fixed_cost:
        assert sol.stats.nfe >= ref.stats.nfe
    if ref.sample_iterations is None:
        assert sol.sample_iterations is None
    else:
        assert torch.equal(sol.sample_iterations, ref.sample_iterations)


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_iterates_equal_the_single_process_solver(world, tmp_path):
    results = values(spawn(solve_cases, world, tmp_path))
    first = results[0]
    for result in results:  # every rank returns the same solution
        for name, pair in result.items():
            if name == "serial":
                continue
            sol, ref = pair
            check_solution(sol, ref, fixed_cost=name != "torchdiffeq")
            torch.testing.assert_close(sol.ys, first[name][0].ys, rtol=0, atol=0)
    # exactness at N iterations: the result is the serial fine solution
    exact, _ = first["exact"]
    assert exact.iterations == 16 and exact.converged
    torch.testing.assert_close(exact.ys, first["serial"], rtol=1e-13, atol=1e-13)
    assert first["coarse"][0].stats.fine_nfe == 0 and not first["coarse"][0].converged
    assert len(set(first["independent"][0].sample_iterations.tolist())) > 1


def refuse(rank, world, case):
    p, y0, t = lotka(slices=2)
    if case == "shape" and rank == 1:
        y0 = torch.ones(3, dtype=F64)
    if case == "invalid" and rank == 1:
        t = t.flip(0)[[0, 2, 1]]  # not monotone: refused by the local checks on rank 1
    if case == "t" and rank == 1:
        t = t * 2
    return pint.distributed.parareal(p.f, y0, t, coarse=pint.Euler(1), fine=pint.RK4(4),
                                     vectorized=True, timeout=20)


@pytest.mark.parametrize(("world", "case", "match"), [
    (3, "ranks", "3 ranks but only 2 time slices"),
    (2, "shape", "y0's shape differs"),
    (2, "invalid", "refused their inputs|strictly increasing"),
    (2, "t", "t differs"),
])
def test_invalid_configurations_are_refused_on_every_rank(world, case, match, tmp_path):
    results = spawn(refuse, world, tmp_path, case)
    refused(results, match)
    assert all(result["elapsed"] < 10 for result in results.values())


def fail(rank, world, how, timeout, marker):
    p, y0, t = lotka(slices=8)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        if rank == 1 and calls[0] == 20:
            Path(marker).write_text(str(time.time()))
            if how == "kill":
                os._exit(3)  # the rank dies mid-solve
            time.sleep(60)  # the rank hangs
        time.sleep(0.002)
        return p.f(t, y)

    return pint.distributed.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(20),
                                     vectorized=True, tol=0.0, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize(("how", "timeout", "bound"), [("kill", 60.0, 5.0), ("hang", 3.0, 8.0)])
def test_a_dead_or_hung_rank_makes_the_others_fail_quickly(how, timeout, bound, tmp_path):
    """A killed rank closes its connections: its peers fail at once (well before the
    60 s timeout), and the failure cascades. A hung rank is caught by the timeout.
    ``bound``: seconds from the failure of rank 1 to the error on every other rank."""
    marker = tmp_path / "failed_at"
    results = spawn(fail, 4, tmp_path, how, timeout, str(marker), wait=30, may_hang=(1,))
    assert results[1] is None  # killed, or hung and killed by the harness
    failed_at = float(marker.read_text())
    for rank in (0, 2, 3):
        result = results[rank]
        assert result is not None, f"rank {rank} hung"
        assert result["error"] == "DistributedError", result
        assert "pint.distributed" in result["message"]
        assert result["ended_at"] - failed_at < bound, result


def raise_in_f(rank, world, failer, how, stay, marker):
    """Rank ``failer``'s ``f`` raises (or returns NaN) mid-solve; that process then stays
    alive for ``stay`` seconds (a notebook, a caller's try/except) before it re-raises."""
    p, y0, t = lotka(slices=8)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        if rank == failer and calls[0] == 20:
            Path(marker).write_text(str(time.time()))
            if how == "nan":
                return torch.full_like(y, float("nan"))
            raise ZeroDivisionError("boom in f on purpose")
        time.sleep(0.002)
        return p.f(t, y)

    try:
        return pint.distributed.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(20),
                                         vectorized=True, tol=0.0, timeout=60)
    except Exception:
        if rank == failer:
            time.sleep(stay)
        raise


@pytest.mark.parametrize(("failer", "how", "reason"), [
    (0, "raise", "ZeroDivisionError: boom in f on purpose"),
    (2, "nan", "NonFiniteError: "),
])
def test_a_rank_that_raises_and_stays_alive_stops_the_others_at_once(failer, how, reason,
                                                                     tmp_path):
    """The failing rank tells the others: they stop within seconds (not the 60 s timeout, nor
    when the failing process ends 6 s later), with an error naming that rank and its error."""
    marker = tmp_path / "failed_at"
    results = spawn(raise_in_f, 3, tmp_path, failer, how, 6.0, str(marker), wait=40)
    failed_at = float(marker.read_text())
    own = results[failer]
    assert own is not None and own["error"] == reason.split(":")[0], own  # its own error
    for rank in set(range(3)) - {failer}:
        result = results[rank]
        assert result is not None, f"rank {rank} hung"
        assert result["error"] == "RankFailed", result
        assert f"rank {failer} failed with {reason}" in result["message"], result["message"]
        assert result["ended_at"] - failed_at < 4.0, result


def _exit_entry(rank, world, store, out, failer):
    """A process that ends as a script does: the exception propagates (exit status 1)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        raise_in_f(rank, world, failer, "raise", 0.0, str(out / "failed_at"))
    except Exception as error:
        torch.save({"error": type(error).__name__, "message": str(error)}, out / f"{rank}.pt")
        raise


def test_a_raising_rank_that_exits_ends_every_process_with_a_python_error(tmp_path):
    """No SIGABRT ("terminate called without an active exception") on any rank: every process
    ends with its exception (exit status 1), the failing one with its own."""
    world, failer = 3, 1
    context = mp.get_context("spawn")
    procs = [context.Process(target=_exit_entry, args=(rank, world, tmp_path / "store",
                                                      tmp_path, failer))
             for rank in range(world)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 40
    for proc in procs:
        proc.join(max(deadline - time.monotonic(), 0.1))
    codes = [proc.exitcode for proc in procs]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert codes == [1] * world, f"exit codes {codes} (negative: killed by that signal)"
    for rank in range(world):
        result = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        if rank == failer:
            assert result["error"] == "ZeroDivisionError", result
        else:
            assert result["error"] == "RankFailed", result
            assert f"rank {failer} failed with ZeroDivisionError" in result["message"]


def srds_worker(rank, world):
    from pint_diffusion import sample_srds

    denoiser, x, sigmas, extra = conditioned_toy(4, 36)
    out = {}
    for tol in (1e-3, 0.0):
        kw = dict(extra_args=extra, disable=True, return_info=True, tol=tol, blocks=6)
        out[tol] = (sample_srds(denoiser, x, sigmas, group="default", **kw),
                    sample_srds(denoiser, x, sigmas, **kw))
    return out


def test_distributed_srds_equals_single_process_srds(tmp_path):
    for result in values(spawn(srds_worker, 2, tmp_path)):
        for (dist_x, dist_info), (x, info) in result.values():
            assert torch.equal(dist_x, x)
            assert torch.equal(dist_info.sample_iterations, info.sample_iterations)
            assert dist_info.residuals == info.residuals
            assert dist_info.converged == info.converged
            assert dist_info.sequential_nfe == info.sequential_nfe
        (_, info_tol), _ = result[1e-3]
        assert info_tol.iterations < 6  # the tolerance stopped it early


def srds_callback_on_rank_0(rank, world):
    """A progress callback on rank 0 only (refused with group=), the process staying alive."""
    from pint_diffusion import sample_srds

    def denoiser(x, sigma):
        return x / (1 + sigma[:, None] ** 2)

    sigmas = torch.linspace(10.0, 0.0, 13)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0)) * 10
    try:
        return sample_srds(denoiser, x, sigmas, group="default", disable=True,
                           callback=(lambda info: None) if rank == 0 else None)
    except ValueError:
        time.sleep(8 if rank == 0 else 0)  # a notebook: the process goes on
        raise


def test_a_callback_on_one_rank_is_refused_on_every_rank(tmp_path):
    """It was refused before the up-front agreement, on rank 0 only: rank 1 waited in it until
    rank 0's process ended (or the group's 30-minute timeout)."""
    results = spawn(srds_callback_on_rank_0, 2, tmp_path, wait=30)
    for rank, result in results.items():
        assert result is not None and result.get("error") == "ValueError", (rank, result)
    assert "not supported" in results[0]["message"]
    assert "rank(s) [0] refused their inputs" in results[1]["message"]
    assert results[1]["elapsed"] < 5, results[1]  # not when rank 0's process ends, 8 s later


def test_needs_an_initialized_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    p, y0, t = lotka(slices=2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        pint.distributed.parareal(p.f, y0, t, coarse=pint.Euler(1), fine=pint.Euler(2))


def test_slice_ranges():
    assert pint.distributed.slice_ranges(10, 4) == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert pint.distributed.slice_ranges(3, 3) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError, match="at least one slice"):
        pint.distributed.slice_ranges(2, 3)


SCRIPT = """
import torch, torch.distributed as dist, pint, pint.distributed
from pint import problems
torch.set_num_threads(1)
dist.init_process_group("gloo")
p = problems.lotka_volterra(t1=4.0)
t = p.times(13, dtype=torch.float64)
kw = dict(coarse=pint.RK4(1), fine=pint.RK4(10), tol=1e-9, vectorized=True)
sol = pint.distributed.parareal(p.f, p.y0.double(), t, **kw)
ref = pint.parareal(p.f, p.y0.double(), t, pipelined=True, **kw)
assert torch.equal(sol.ys, ref.ys) and sol.iterations == ref.iterations
print(f"rank {dist.get_rank()} ok {sol.iterations}")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_launch_with_torchrun(tmp_path):
    """The standard launcher: torchrun --standalone picks a free port itself."""
    script = tmp_path / "solve.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(pint.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script)], capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 ok" in done.stdout and "rank 1 ok" in done.stdout


def nccl_worker(rank, world):
    p = problems.lotka_volterra(t1=4.0)
    y0, t = p.y0.double().cuda(), p.times(9, dtype=F64, device="cuda")
    kw = dict(coarse=pint.RK4(1), fine=pint.RK4(10), tol=0.0, vectorized=True)
    sol = pint.distributed.parareal(p.f, y0, t, **kw)
    ref = pint.parareal(p.f, y0, t, pipelined=True, **kw)
    return (sol.ys - ref.ys).abs().max().item(), sol.ys.device.type


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2 or not dist.is_nccl_available(),
                    reason="needs 2 CUDA devices and NCCL")
def test_nccl_on_two_gpus(tmp_path):
    for error, device in values(spawn(nccl_worker, 2, tmp_path, backend="nccl")):
        assert error <= 1e-12 and device == "cuda"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gloo_with_cuda_states(tmp_path):
    """States on a GPU with the gloo backend: messages are staged through the CPU."""
    for error, device in values(spawn(nccl_worker, 2, tmp_path)):
        assert error <= 1e-12 and device == "cuda"



def pipeline_worker(rank, world):
    from diffusers import DDIMScheduler

    from pint_diffusion.pipelines import StableDiffusionSRDSPipeline
    from pint_diffusion.testing import LATENT_CHANNELS, tiny_sd_pipeline

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, steps_offset=1)
    srds = StableDiffusionSRDSPipeline.from_pipe(tiny_sd_pipeline(scheduler))
    srds.set_progress_bar_config(disable=True)
    noise = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))
    call = dict(prompt=["a cat", "a red house"], num_inference_steps=8, guidance_scale=4.0,
                output_type="latent", srds_blocks=4, srds_tol=0.0)
    spread = srds(latents=noise.clone(), srds_group="default", **call)
    alone = srds(latents=noise.clone(), **call)
    return spread.images, alone.images, spread.info.iterations, alone.info.iterations


def test_srds_pipeline_over_two_ranks_equals_one_process(tmp_path):
    """The UNet's batched kernels see other row counts on each rank, so the latents agree to
    float32 round-off (not bit for bit, as the toy denoiser's do)."""
    for spread, alone, its_spread, its_alone in values(spawn(pipeline_worker, 2, tmp_path)):
        assert (spread - alone).abs().max() <= 1e-5 * alone.abs().max()
        assert its_spread == its_alone == 4


# -- Picard and quasi-Newton: each iteration's rows shared out over the ranks ---------------
PICARD_JACOBIANS = {"identity": pint.Identity, "secant": pint.Secant,
                    "diagonal": pint.DiagonalSecant, "anderson": pint.Anderson}


def lotka_short(slices):  # short enough for plain Picard to converge (t1 = 4 blows up)
    p = problems.lotka_volterra(t1=1.0)
    return p, p.y0.to(F64), p.times(slices + 1, dtype=F64)


def picard_cases(rank, world):
    """Every Jacobian model (full and sliding window), and independent problems with the
    initial guess and Freeze, over the group and in this process alone: the solutions."""
    p, y0, t = lotka_short(24)
    out = {}
    for name, jacobian in PICARD_JACOBIANS.items():
        for window in (None, 5):
            options = dict(step=pint.RK4(2), jacobian=jacobian(), window=window, tol=1e-9,
                           vectorized=True)
            out[name, window] = (pint.distributed.picard(p.f, y0, t, timeout=30, **options),
                                 pint.picard(p.f, y0, t, **options))
    ys0 = torch.stack([y0, 1.2 * y0, 0.8 * y0])
    options = dict(step=pint.RK4(1), jacobian=pint.Secant(), initial=pint.Tangent(),
                   acceptance=pint.Freeze(stop=True), window=6, tol=1e-8, independent=True,
                   vectorized=True)
    out["independent", 6] = (pint.distributed.picard(indexed_field, ys0, t, timeout=30,
                                                     **options),
                             pint.picard(indexed_field, ys0, t, **options))
    return {key: (dist_sol.ys, dist_sol.iterations, dist_sol.stats.sequential_nfe,
                  dist_sol.stats.nfe, dist_sol.residuals, ref.ys, ref.iterations,
                  ref.stats.sequential_nfe, ref.stats.nfe, ref.residuals)
            for key, (dist_sol, ref) in out.items()}


@pytest.mark.parametrize("world", [1, 2, 4])
def test_distributed_picard_equals_the_single_process_bit_for_bit(world, tmp_path):
    """On every rank: the same states (bit for bit), iterations, depth, evaluations and
    residuals as pint.picard in one process; a group of one rank is the single process."""
    for result in values(spawn(picard_cases, world, tmp_path, wait=240)):
        assert len(result) == 2 * len(PICARD_JACOBIANS) + 1
        for key, (ys, k, depth, nfe, res, ref_ys, ref_k, ref_depth, ref_nfe, ref_res) in (
                result.items()):
            assert torch.equal(ys, ref_ys), key
            assert (k, depth, nfe, res) == (ref_k, ref_depth, ref_nfe, ref_res), key
            assert k >= 1, key


ROWS_OPTIONS = {  # what rank 1 changes in each refused case, per row-sharing solver
    "picard": {"window": {"window": 4}, "jacobian": {"jacobian": pint.Anderson()},
               "invalid": {"window": 0}},
    "mgrit": {"coarsening": {"coarsening": 2}, "relaxation": {"relaxation": pint.FRelaxation()},
              "invalid": {"levels": 1}},
}


def rows_refuse(rank, world, method, case):
    """Rank 1 passes a different ``y0``, ``t`` or option, or an invalid one."""
    p, y0, t = lotka_short(16)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return p.f(t, y)

    options = dict(vectorized=True, timeout=20)
    if method == "picard":
        options.update(step=pint.RK4(1), jacobian=pint.Secant())
    else:
        options.update(propagator=pint.RK4(1), coarsening=4)
    if rank == 1:
        if case == "y0":
            y0 = y0 + 1e-12
        elif case == "t":
            t = t * 2
        else:
            options.update(ROWS_OPTIONS[method][case])
    solve = pint.distributed.picard if method == "picard" else pint.distributed.mgrit
    try:
        solve(f, y0, t, **options)
    finally:
        assert calls[0] == 0  # refused before any evaluation


@pytest.mark.parametrize(("method", "case", "match"), [
    ("picard", "y0", "y0's values differ"),
    ("picard", "t", "t differs"),
    ("picard", "window", "options .* differ"),
    ("picard", "jacobian", "options .* differ"),
    ("picard", "invalid", "refused their inputs|window must be"),
    ("mgrit", "y0", "y0's values differ"),
    ("mgrit", "coarsening", "options .* differ"),
    ("mgrit", "relaxation", "options .* differ"),
    ("mgrit", "invalid", "refused their inputs|levels must be"),
])
def test_distributed_rows_refuse_differing_inputs_on_every_rank(method, case, match,
                                                                 tmp_path):
    refused(spawn(rows_refuse, 2, tmp_path, method, case), match)


def rows_fail(rank, world, method, how, marker):
    """Rank 1's ``f`` raises, returns NaN or kills its process mid-solve (Picard: in the third
    iteration; MGRIT: in a relaxation sweep of the first cycle)."""
    p, y0, t = lotka_short(16 if method == "picard" else 32)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        if rank == 1 and calls[0] == 10:
            Path(marker).write_text(str(time.time()))
            if how == "kill":
                os._exit(3)
            if how == "nan":
                return torch.full_like(y, float("nan"))
            raise ZeroDivisionError("boom in f on purpose")
        time.sleep(0.002)
        return p.f(t, y)

    if method == "picard":
        return pint.distributed.picard(f, y0, t, step=pint.RK4(1), jacobian=pint.Secant(),
                                       tol=0.0, vectorized=True, timeout=60)
    return pint.distributed.mgrit(f, y0, t, propagator=pint.RK4(1), coarsening=4, tol=0.0,
                                  vectorized=True, timeout=60)


@pytest.mark.parametrize("method", ["picard", "mgrit"])
@pytest.mark.parametrize(("how", "own", "others"), [
    ("raise", "ZeroDivisionError", "RankFailed"),
    ("nan", "NonFiniteError", "RankFailed"),
    ("kill", None, "DistributedError"),
])
def test_distributed_rows_a_failing_or_dead_rank_stops_the_others(method, how, own, others,
                                                                    tmp_path):
    """Picard and MGRIT (rows shared per round): the failing rank raises its own error (a
    non-finite row is named where it was computed); the others raise within seconds (not the
    60 s timeout), naming rank 1 (a killed rank: the link to it is lost)."""
    marker = tmp_path / "failed_at"
    results = spawn(rows_fail, 3, tmp_path, method, how, str(marker), wait=40)
    failed_at = float(marker.read_text())
    if own is None:
        assert results[1] is None  # killed
    else:
        assert results[1] is not None and results[1]["error"] == own, results[1]
    for rank in (0, 2):
        result = results[rank]
        assert result is not None, f"rank {rank} hung"
        assert result["error"] == others, result
        assert "rank 1" in result["message"], result["message"]
        if own is not None:
            assert f"rank 1 failed with {own}" in result["message"], result["message"]
        assert result["ended_at"] - failed_at < 5.0, result


# -- MGRIT: every round's rows shared out over the ranks ------------------------------------
def mgrit_cases(rank, world):
    """MGRIT over the group and in this process alone: an explicit 2-level FCF solve, a
    3-level F-cycle with F-relaxation, a stiff heat equation with an implicit propagator
    (its Newton solves go through the same rounds), a custom norm, uneven intervals."""
    p = problems.lotka_volterra(t1=4.0)
    y0, t = p.y0.to(F64), p.times(33, dtype=F64)
    heat = problems.heat_1d(points=15, modes=(1, 5), t1=0.2)
    th = heat.times(33, dtype=F64)
    cases = {
        "fcf": (p.f, y0, t, dict(propagator=pint.RK4(1), coarsening=4, tol=1e-10)),
        "f-cycle": (p.f, y0, t, dict(propagator=pint.RK4(1), coarsening=2, levels=3,
                                     relaxation=pint.FRelaxation(), cycle=pint.FCycle(),
                                     tol=1e-10)),
        "implicit": (heat.f, heat.y0.to(F64), th,
                     dict(propagator=pint.BackwardEuler(1), coarsening=4, tol=1e-10)),
        "norm": (p.f, y0, p.times(31, dtype=F64),  # 30 intervals: uneven last C-interval
                 dict(propagator=pint.RK4(1), coarsening=4, tol=1e-9,
                      norm=lambda r: r.abs().max())),
    }
    out = {}
    for name, (f, start, grid, options) in cases.items():
        sol = pint.distributed.mgrit(f, start, grid, vectorized=True, timeout=30, **options)
        ref = pint.mgrit(f, start, grid, vectorized=True, **options)
        out[name] = (sol.ys, sol.iterations, sol.converged, sol.residuals,
                     sol.stats.sequential_nfe, sol.stats.evaluations,
                     ref.ys, ref.iterations, ref.converged, ref.residuals,
                     ref.stats.sequential_nfe, ref.stats.evaluations)
    return out


@pytest.mark.parametrize("world", [1, 2, pytest.param(4, marks=pytest.mark.slow)])
def test_distributed_mgrit_equals_the_single_process_bit_for_bit(world, tmp_path):
    """On every rank: the same states (bit for bit), iterations, residuals, depth and
    evaluations per level as pint.mgrit in one process."""
    for result in values(spawn(mgrit_cases, world, tmp_path, wait=240)):
        assert len(result) == 4
        for name, (ys, k, conv, res, depth, evals, ref_ys, ref_k, ref_conv, ref_res,
                   ref_depth, ref_evals) in result.items():
            assert torch.equal(ys, ref_ys), name
            assert (k, conv, res, depth, evals) == (ref_k, ref_conv, ref_res, ref_depth,
                                                    ref_evals), name
            assert ref_conv and k >= 2, name  # a real multi-iteration solve
