"""README.md's Python example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def test_readme_python_example_runs():
    text = README.read_text(encoding="utf-8")
    section = text.split("### From Python", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "one Python example in README's Python section"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    # The example's own assertions ran; check what it left behind too.
    rec = namespace["rec"]
    assert rec.snapshot()["languages"]["en"]["layers"][rec.depth_of(47)]["tokens"] == 1
    assert namespace["analysis"]["format"].startswith("moescope.analysis")
