"""A Ctrl-C (a real SIGINT) that lands while the driver waits for a bridged solver (the
torchdiffeq propagator's thread) ends cleanly: KeyboardInterrupt, no hang, no thread left."""

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    import torch
    from pint.engine import Engine, Task
    from pint.propagators.torchdiffeq import _bridge

    def solve(func):  # a solver whose own work is slow: the driver waits for it meanwhile
        y = func(torch.zeros(1), torch.ones(1, 1))
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the driver waits for the solver
        time.sleep(0.5)
        return func(torch.zeros(1), y)

    engine = Engine(lambda t, y: -y)
    engine.start(Task(_bridge(solve), lambda y: None))
    try:
        engine.run()
    except KeyboardInterrupt:
        engine.close()
        time.sleep(0.1)
        alive = [th.name for th in threading.enumerate() if th.name == "pint-bridge"
                 and th.is_alive()]
        print("interrupted", alive, flush=True)
        sys.exit(3)
    print("finished", flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_a_torchdiffeq_propagation_ends_cleanly():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the process hung after SIGINT")
    assert child.returncode == 3, (out, err)
    assert "interrupted []" in out  # no solver thread left running
