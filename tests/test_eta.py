"""The sweep's time left is weighted by each case's work (issue 17 part 2): a depth sweep's cases
are not equal, and the estimate is refined from the cases that finished."""

from __future__ import annotations

import pytest

from edgebench.records import Case
from edgebench.run.eta import DECODE_STEP_PRIOR, Eta, Work, case_work, format_left


def _case(**kw) -> Case:
    return Case(backend="fake", **({"model": "m.fake", "n_prompt": 512, "n_gen": 128, "reps": 5} | kw))


def _truth(w: Work, fixed=0.3, per_token=1e-4, per_step=1e-4 * DECODE_STEP_PRIOR) -> float:
    """A machine whose case takes a fixed start-up plus a cost per prefill token and per decode step."""
    return fixed + per_token * w.prefill_tokens + per_step * w.decode_steps


def test_work_counts_the_depth_fill_of_every_rep_and_the_warmup():
    w0, w4k = case_work(_case(test="pg")), case_work(_case(test="pg", depth=4096))
    assert w0 == Work(5 * 512 + 512, 5 * 128 + 2)
    assert w4k.prefill_tokens - w0.prefill_tokens == 6 * 4096  # 5 reps + the warmup each fill the depth
    split = case_work(_case(test="split", depth=1024))  # pp and tg each start on a filled cache
    assert split.prefill_tokens == 6 * (2 * 1024 + 512)
    assert case_work(_case(test="split", n_gen=0, depth=1024)).prefill_tokens == 6 * (1024 + 512)
    assert case_work(_case(test="split", depth=1024), reps=2).decode_steps == 2 * 128 + 2


def test_a_depth_sweep_is_weighted_by_work_not_counted():
    works = [case_work(_case(test="split", depth=d)) for d in (0, 512, 2048, 8192)]
    eta = Eta()
    assert eta.left(works) is None and format_left(None) == "left ?"  # nothing finished: unknown
    eta.finished(works[0], _truth(works[0]))
    eta.finished(works[1], _truth(works[1]))
    truth_left = sum(_truth(w) for w in works[2:])
    assert eta.left(works[2:]) == pytest.approx(truth_left, rel=1e-6)
    by_count = (_truth(works[0]) + _truth(works[1])) / 2 * 2  # what a count of cases would say
    assert by_count < 0.5 * truth_left  # the deep cases cost far more than the shallow ones did


def test_the_estimate_is_refined_to_what_the_machine_measured():
    # decode steps here cost 60 prefill tokens, not the prior's 20: three different cases show it
    truth = lambda w: _truth(w, fixed=0.5, per_token=2e-5, per_step=1.2e-3)  # noqa: E731
    works = [case_work(_case(test="split", depth=d, n_gen=n)) for d, n in
             ((0, 128), (2048, 16), (512, 256), (4096, 128), (8192, 64))]
    eta = Eta()
    eta.finished(works[0], truth(works[0]))
    first_guess = eta.left(works[3:])
    for w in works[1:3]:
        eta.finished(w, truth(w))
    assert eta.rates() == pytest.approx((0.5, 2e-5, 1.2e-3), rel=1e-6)
    assert eta.left(works[3:]) == pytest.approx(sum(truth(w) for w in works[3:]), rel=1e-6)
    assert first_guess != pytest.approx(eta.left(works[3:]), rel=0.05)  # it did change as cases finished


def test_the_case_in_flight_counts_for_what_is_left_of_it():
    w = case_work(_case())
    eta = Eta()
    eta.finished(w, 10.0)
    assert eta.left([w], in_flight=w, in_flight_done=0.75) == pytest.approx(12.5)
    assert eta.left([], in_flight=w, in_flight_done=1.5) == 0.0


@pytest.mark.parametrize("seconds, text", [(12.4, "left ~12s"), (150, "left ~2m"), (3900, "left ~1h05m")])
def test_left_is_short(seconds, text):
    assert format_left(seconds) == text


def test_the_progress_shows_the_weighted_time_left_and_escapes_file_names():
    import io

    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from edgebench.run.session import ProgressEvents

    cases = [_case(test="split", depth=d, model="[bold]x.fake") for d in (0, 0, 4096)]
    with Progress(TextColumn("{task.description} {task.fields[left]}"), console=Console(file=io.StringIO())) as p:
        ev = ProgressEvents(p, cases)
        ev.case_start(0, 3, cases[0])
        assert p.tasks[0].fields["left"] == "left ?"
        assert p.tasks[0].description == "case 1/3 \\[bold]x.fake"
        ev.case_measured(0, cases[0], "ok", {"wall_s": 6.0})
        ev.case_end(0, "ok", "")
        # case 2 as long as case 1, the deep case 3 (4096 tokens filled 2x per rep) far longer
        w = [case_work(c) for c in cases]
        expected = 6.0 * (w[1].prefill_tokens + w[2].prefill_tokens + DECODE_STEP_PRIOR * (w[1].decode_steps + w[2].decode_steps)) \
            / (w[0].prefill_tokens + DECODE_STEP_PRIOR * w[0].decode_steps)
        assert expected > 2 * 12.0  # a count of cases would say 2 x 6 s
        assert p.tasks[0].fields["left"] == format_left(expected)
