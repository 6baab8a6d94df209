"""Machine-readable output is strict JSON: non-finite numbers become null."""
import json
import math

from planner.jsonout import dumps, finite_or_null


def test_non_finite_numbers_become_null_and_parse_strictly():
    doc = {"interval": [0.1, math.inf], "cost": math.nan, "nested": [{"x": -math.inf, "n": 3}], "ok": 1.5}
    text = dumps(doc)
    back = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))   # no Infinity/NaN
    assert back == {"interval": [0.1, None], "cost": None, "nested": [{"x": None, "n": 3}], "ok": 1.5}
    assert finite_or_null((1.0, math.inf)) == [1.0, None]
