"""What the terminal output says: tables, notes, and why no plan was found."""
import pytest
from rich.console import Console

from planner import api, render
from planner.compare import compare


def shown(print_fn, obj) -> str:
    console = Console(record=True, width=250)
    print_fn(obj, console)
    return console.export_text()


@pytest.fixture(scope="module")
def l40s_over_max_gpus():
    """Llama-70B at 50 req/s on L40S: 2x L40S fits in memory, but carrying the rate takes more than 64 GPUs."""
    return api.recommend("llama-70b", ["ttft_p90=500ms"], gpus=["l40s"], rate_rps=50)


def test_no_plan_names_what_eliminated_the_candidates(l40s_over_max_gpus):
    r = l40s_over_max_gpus
    assert not r.ranked and not r.result.closest and r.result.rejected["GPUs"] and r.result.gpus_needed > 64
    text = shown(render.print_recommendation, r)
    assert f"needs at least {r.result.gpus_needed} GPUs to carry 50 req/s, more than --max-gpus 64" in text
    assert "fits in memory on the GPUs searched" not in text    # it does fit: the GPU limit eliminated it
    assert "give --rate" not in text                            # --rate was given
    assert "┏" not in text                                      # no empty table
    assert render.recommendation_json(r)["no_plan_reason"].startswith("No plan: every configuration")


def test_no_plan_in_simulation_says_so():
    r = api.recommend("llama-70b", ["ttft_p90=500ms"], gpus=["l40s"], rate_rps=50, max_gpus=128)
    assert not r.ranked and r.simulated
    text = shown(render.print_recommendation, r)
    assert "No plan meets the SLO in simulation at 50 req/s; the binding constraint is ttft_p90<=500ms" in text
    assert "give --rate" not in text


def test_percentile_note_only_without_a_rate():
    r = api.recommend("llama-8b", ["ttft_p90=500ms"], gpus=["h100"], trials=30)
    assert "give --rate to simulate" in shown(render.print_recommendation, r)


def test_no_plan_within_max_gpus_for_memory():
    r = api.recommend("llama-405b", ["ttft=1s"], gpus=["l4"], max_gpus=4, trials=60)
    text = shown(render.print_recommendation, r)
    assert "no configuration fits the model in memory on at most --max-gpus 4 GPUs" in text


def test_compare_row_says_what_eliminated_the_gpu():
    cmp = compare("llama-70b", ["l40s"], ["ttft_p90=500ms"], rate_rps=50, trials=120)
    row = cmp.rows[0]
    assert row.candidate is None and "more than --max-gpus 64" in row.reason and "req/s" in row.reason


def test_compare_footnote_without_slos_has_no_headroom():
    cmp = compare("llama-8b", ["h100"], trials=20, max_gpus=2)
    assert "headroom" not in shown(render.print_comparison, cmp)
    cmp.slos = api._slos(["ttft=1s"])
    cmp.rows[0].headroom = {cmp.slos[0].label: 0.5}
    assert "headroom = limit / predicted - 1" in shown(render.print_comparison, cmp)


def test_explain_of_a_plan_that_does_not_fit_prints_no_infinite_figures():
    text = shown(render.print_explanation, api.explain("llama-70b", "l4"))
    assert "inf" not in text and "At batch" not in text
    assert "does not fit in memory" in text and "Does not fit:" in text
