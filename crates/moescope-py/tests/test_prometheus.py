"""serve_prometheus from Python: scraped over HTTP, the recorded language's series appear with
the recorded counts; stop() and the context manager close the port."""

import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import moescope

SPEC = {"name": "pyserve", "num_experts": 8, "top_k": 2, "layers": [0, 1]}


def scrape_until(url, needle, timeout=10.0):
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in /metrics after {timeout} s:\n{text[:2000]}")


def test_scrape_shows_the_recorded_languages():
    rec = moescope.Recorder(SPEC)
    he, en = rec.language("he"), rec.language("en")
    ids = np.array([[0, 1]] * 30 + [[2, 3]] * 10, dtype=np.int64)
    for depth in (0, 1):
        rec.record(depth, ids, [(he, 25), (en, 15)])
    with moescope.serve_prometheus(rec, "127.0.0.1:0", interval_seconds=0.05) as server:
        assert server.running and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        text = scrape_until(server.url, 'moe_routing_tokens_total{model="pyserve",lang="he"} 25')
        assert 'moe_routing_tokens_total{model="pyserve",lang="en"} 15' in text
        # he: 25 tokens all on experts 0 and 1 (k = 2): usage entropy of 1 bit.
        assert 'moe_routing_usage_entropy_bits{model="pyserve",layer="1",lang="he"} 1\n' in text
        # Recorded later: the next rounds publish it.
        rec.record(0, np.array([[4, 5]] * 7), "zh")
        scrape_until(server.url, 'moe_routing_tokens_total{model="pyserve",lang="zh"} 7')
    assert not server.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)
    server.stop()  # idempotent


def test_a_taken_port_raises_serve_error():
    rec = moescope.Recorder(SPEC)
    first = moescope.serve_prometheus(rec, "127.0.0.1:0")
    try:
        with pytest.raises(moescope.ServeError) as err:
            moescope.serve_prometheus(rec, first.address)
        assert isinstance(err.value, OSError)
    finally:
        first.stop()
