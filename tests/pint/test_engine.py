"""The engine alone: batching, depth = round, subsets of rows, zero-evaluation tasks,
completion order, chunking, output checks and non-finite detection."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pint.engine import MAX_PENDING_CHECKS, Engine, NonFiniteError, Request, Task


def counting(calls):
    def f(t, y):
        calls.append(len(y))
        return -y

    return f


def euler(t0, t1, y0, steps):
    """``steps`` forward Euler steps, one request each."""
    h = (t1 - t0).reshape(-1, *[1] * (y0.ndim - 1)) / steps
    y = y0
    for i in range(steps):
        y = y + h * (yield Request(t0 + i * h.flatten(), y))
    return y


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.integers(1, 4))
@settings(max_examples=30, deadline=None)
def test_one_call_per_round_and_depth_is_the_longest_task(steps, rows):
    calls = []
    engine = Engine(counting(calls))
    done = []
    for s in steps:
        y0 = torch.ones(rows, 2, dtype=torch.float64)
        t0 = torch.zeros(rows, dtype=torch.float64)
        engine.start(Task(euler(t0, t0 + 1, y0, s), done.append, label=f"euler{s}"))
    engine.run()
    assert engine.rounds == max(steps) == len(calls)
    # round r evaluates the rows of every task that is still running
    assert calls == [rows * sum(s > r for s in steps) for r in range(max(steps))]
    assert sum(engine.rows.values()) == rows * sum(steps)
    for s, y in zip(sorted(steps), sorted(done, key=lambda y: float(y[0, 0])), strict=True):
        assert torch.allclose(y, torch.full_like(y, (1 - 1 / s) ** s))  # Euler on y' = -y


def test_subset_requests_and_problem_index():
    seen = []

    def f(t, y, index):
        seen.append(index.tolist())
        return torch.zeros_like(y)

    def partial(y0):
        yield Request(torch.zeros(3), y0)
        yield Request(torch.zeros(1), y0[1:2], torch.tensor([1]))
        return y0

    engine = Engine(f, with_index=True)
    engine.start(Task(partial(torch.ones(3, 1)), lambda y: None,
                      problems=torch.tensor([7, 8, 9])))
    engine.run()
    assert seen == [[7, 8, 9], [8]]


def test_zero_evaluation_tasks_complete_at_once_without_recursion():
    engine = Engine(lambda t, y: y)
    order = []

    def nothing(value):
        return value
        yield  # a generator that asks for nothing

    def chain(i):
        order.append(i)
        if i < 2000:  # deep chains must not recurse
            engine.start(Task(nothing(i + 1), chain))

    engine.start(Task(nothing(0), chain))
    assert order == list(range(2001)) and engine.rounds == 0 and not engine.live


def test_completion_order_is_start_order_and_tasks_started_in_a_round_join_the_next():
    engine = Engine(lambda t, y: torch.zeros_like(y))
    log = []

    def one(name):
        yield Request(torch.zeros(1), torch.zeros(1, 1))
        return name

    def on_done(name):
        log.append((name, engine.rounds))
        if name == "a":
            engine.start(Task(one("c"), on_done))

    engine.start(Task(one("a"), on_done))
    engine.start(Task(one("b"), on_done))
    engine.run()
    assert log == [("a", 1), ("b", 1), ("c", 2)]


@pytest.mark.parametrize("max_batch", [1, 2, 3, 100])
def test_max_batch_chunks_a_round_into_calls_with_the_same_result(max_batch):
    sizes = []

    def f(t, y):
        sizes.append(len(y))
        return torch.sin(y) * t[:, None]

    results = {}
    for cap in (None, max_batch):
        engine = Engine(f, max_batch=cap)
        out = []
        y0 = torch.linspace(0, 1, 7, dtype=torch.float64).reshape(7, 1)
        engine.start(Task(euler(torch.zeros(7, dtype=torch.float64),
                                torch.ones(7, dtype=torch.float64), y0, 3), out.append))
        engine.run()
        results[cap] = (out[0], engine.rounds, engine.calls)
    assert torch.equal(results[None][0], results[max_batch][0])
    assert results[max_batch][1] == 3  # depth unchanged
    assert results[max_batch][2] == 3 * -(-7 // max_batch)
    assert max(sizes[3:]) <= max_batch


@pytest.mark.parametrize("max_batch", [0, -1, 1.5, True])
def test_bad_max_batch(max_batch):
    with pytest.raises(ValueError, match="max_batch"):
        Engine(lambda t, y: y, max_batch=max_batch)


@pytest.mark.parametrize(("output", "error", "message"), [
    (lambda y: y[:, :1], ValueError, "shape"),
    (lambda y: y.sum(), ValueError, "shape"),
    (lambda y: y.to(torch.int64), TypeError, "dtype"),
    (lambda y: y.float(), TypeError, "dtype"),
    (lambda y: None, TypeError, "returned NoneType"),
    (lambda y: (y,), TypeError, "returned tuple"),
])
def test_the_vector_field_must_return_a_tensor_exactly_like_y(output, error, message):
    engine = Engine(lambda t, y: output(y))
    engine.start(Task(euler(torch.zeros(2, dtype=torch.float64),
                            torch.ones(2, dtype=torch.float64),
                            torch.ones(2, 3, dtype=torch.float64), 1), lambda y: None))
    with pytest.raises(error, match=message):
        engine.step()


def test_non_finite_output_names_the_task_row_and_every_bad_problem():
    def f(t, y, index):
        out = -y
        out[index == 2] = float("nan")
        out[index == 4] = float("inf")
        return out

    engine = Engine(f, with_index=True)
    engine.start(Task(euler(torch.zeros(3), torch.ones(3), torch.ones(3, 1), 2), lambda y: None,
                      label="fine", iteration=5, points=torch.tensor([10, 11, 12]),
                      problems=torch.tensor([1, 2, 4])))
    engine.step()  # the check is read back at verify(), not in the round
    engine.step()
    with pytest.raises(NonFiniteError, match="point 11 in iteration 5") as info:
        engine.verify()
    where = info.value.location  # the first non-finite round, not a later one
    assert (where.label, where.point, where.problem, where.evaluation) == ("fine", 11, 2, 0)
    assert info.value.problems == [2, 4]
    assert not engine.live  # the engine closed its tasks


def test_pending_checks_are_read_when_a_task_fails_and_every_64_rounds():
    def f(t, y):
        return torch.full_like(y, float("nan"))

    def failing(steps):
        for _ in range(steps):
            yield Request(torch.zeros(1), torch.ones(1, 1))
        raise RuntimeError("caused by the NaN")

    engine = Engine(f)
    engine.start(Task(failing(3), lambda y: None))
    with pytest.raises(NonFiniteError, match="evaluation 0") as info:
        engine.run()
    assert isinstance(info.value.__context__, RuntimeError)

    engine = Engine(f)
    engine.start(Task(failing(1000), lambda y: None))
    with pytest.raises(NonFiniteError, match="evaluation 0"):
        engine.run()
    assert engine.rounds == MAX_PENDING_CHECKS


def test_a_propagation_must_yield_requests():
    def bad():
        yield "f(t, y) please"

    with pytest.raises(TypeError, match="Request"):
        Engine(lambda t, y: y).start(Task(bad(), lambda y: None))
