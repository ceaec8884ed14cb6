"""`record` releases the GIL for large batches: another Python thread runs while it counts."""

import sys
import threading
import time

import numpy as np

import moescope


def steps_of_another_thread_during(call):
    """How many loop steps another Python thread makes while `call()` runs.

    The switch interval is set to 10 s, so the interpreter never takes the GIL from a thread
    by itself during the test: the other thread runs only when the main thread gives the GIL
    up (a blocking call, or native code that releases it). The other thread gives it back at
    every step (`time.sleep(0)`). So with the GIL held for the whole call, no step of the
    other thread can fall between the two clock reads around it: the count is exactly 0."""
    stamps, stop = [], threading.Event()

    def spin():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    thread = threading.Thread(target=spin)
    try:
        thread.start()
        time.sleep(0.05)  # the other thread is running
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    assert any(s < t0 for s in stamps), "the other thread never ran"
    return sum(t0 <= s <= t1 for s in stamps), t1 - t0


def test_another_thread_runs_during_a_long_record_call():
    rec = moescope.Recorder("qwen3-30b-a3b")
    en = rec.language("en")
    rng = np.random.default_rng(0)
    t = 16384  # with router logits (a softmax per token): tens of milliseconds in one call
    ids = rng.integers(0, 128, size=(t, 8))
    logits = rng.normal(size=(t, 128)).astype(np.float32)
    assert ids.size >= moescope.GIL_RELEASE_MIN_SLOTS
    rec.record(0, ids[:64], en, logits=logits[:64])  # warm-up

    steps, took = steps_of_another_thread_during(lambda: rec.record(1, ids, en, logits=logits))
    assert rec.snapshot()["languages"]["en"]["layers"][1]["tokens"] == t
    assert steps >= 10, f"{steps} steps of the other thread during a {took:.3f} s call"


def test_the_measure_sees_a_call_that_holds_the_gil():
    # The control: a pure-Python loop of the same length holds the GIL throughout.
    def busy():
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:
            pass

    steps, took = steps_of_another_thread_during(busy)
    assert took >= 0.03
    assert steps == 0
