"""The dashboard's Sweeps and Sweep pages in process: what they show is what GET /sweeps and
GET /sweeps/{id} answer, the runs pages name a run's sweep and worker, and the sweep's Cancel
button keeps the CSRF rule and stops the whole sweep. (``test_ui_browser.py`` drives them in a
browser, over a sweep that really runs.)"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from inprocess import QUICK
from visitor import Visitor, said

from training.api.ui import views
from training.store.records import RunStatus, SweepInfo

GRID = {"C": [0.1, 1.0, 10.0], "max_iter": [300]}  # max_iter: searched, but one value


@dataclass
class Swept:
    """A sweep queued through the API: its id, its runs, the admin's API headers."""

    id: str
    runs: list[str]
    auth: dict[str, str]


@pytest.fixture
def swept(member: Visitor, keys: dict[str, str]) -> Swept:
    """Three runs: the first two FINISHED on a cluster worker (accuracy 0.8, then 0.95), the
    third still QUEUED."""
    auth = {"Authorization": f"Bearer {keys['admin']}"}
    answer = member.client.post("/sweeps", json={**QUICK, "grid": GRID}, headers=auth)
    assert answer.status_code == 202, answer.text
    sweep = Swept(answer.json()["sweep_id"], answer.json()["run_ids"], auth)
    store = member.api.store
    for run_id, accuracy in zip(sweep.runs[:2], (0.8, 0.95), strict=False):
        store.start_queued(run_id, None)
        store.set_worker(run_id, "host-b-1", "host-b", {})
        store.log_metrics(run_id, [("accuracy", accuracy, 0)])
        store.finish(run_id, RunStatus.FINISHED)
    return sweep


def _api_sweep(member: Visitor, sweep: Swept) -> dict[str, Any]:
    answer = member.client.get(f"/sweeps/{sweep.id}", headers=sweep.auth)
    return dict(answer.json())


def _row(page: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr {attribute}="{value}".*?</tr>', page, re.S)
    assert found, page[:3000]
    return found.group(0)


def test_the_sweep_pages_need_a_login(site: Visitor) -> None:
    for path in ("/sweeps", "/sweeps/0123456789ab"):
        answer = site.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/training/ui/login?next=%2Fsweeps")


def test_the_sweeps_page_shows_each_sweep_as_get_sweeps_lists_it(
    member: Visitor, swept: Swept
) -> None:
    other = member.client.post(
        "/sweeps", json={**QUICK, "dataset": "wine", "grid": {"C": [1, 2]}}, headers=swept.auth
    ).json()["sweep_id"]
    page = member.get("/sweeps")
    assert page.status_code == 200 and 'aria-current="page">Sweeps' in page.text
    listed = member.client.get("/sweeps", headers=swept.auth).json()["sweeps"]
    assert re.findall(r'<tr data-sweep="([0-9a-f]+)"', page.text) == [s["id"] for s in listed]
    assert [s["id"] for s in listed] == [other, swept.id]  # newest first
    row = _row(page.text, "data-sweep", swept.id)
    assert f'href="/training/ui/sweeps/{swept.id}"' in row
    for shown in ("RUNNING", "iris", "logistic_regression", "accuracy", "2 of 3", "0.95"):
        assert shown in row, shown
    assert f'href="/training/ui/runs/{swept.runs[1]}"' in row  # the best run, linked
    assert "none yet" in _row(page.text, "data-sweep", other) and "0 of 2" in page.text
    assert member.get("/sweeps", params={"limit": "1"}).text.count("<tr data-sweep=") == 1
    refused = member.get("/sweeps", params={"limit": "0"})
    assert refused.status_code == 400 and "limit" in said(refused, "error")


def test_a_sweep_page_shows_its_runs_what_varies_the_best_and_the_plot_data(
    member: Visitor, swept: Swept
) -> None:
    page = member.get(f"/sweeps/{swept.id[:8]}")  # a prefix will do, as for the API
    assert page.status_code == 200
    api = _api_sweep(member, swept)
    assert re.findall(r'<tr data-run="([0-9a-f]+)"', page.text) == swept.runs
    head = page.text.split('id="sweep-table"')[1].split("</thead>")[0]
    assert ">C</th>" in head and "max_iter" not in head  # one value: it varies nothing
    assert "<code>0.1</code>" in _row(page.text, "data-run", swept.runs[0])
    best = _row(page.text, "data-run", swept.runs[1])
    assert 'class="best"' in best and 'id="best-mark"' in best and "host-b-1" in best
    assert api["best"]["id"] == swept.runs[1]
    # Only the run not ended is followed live; the page reloads once it ends.
    assert re.findall(r'data-live="([0-9a-f]+)"', page.text) == [swept.runs[2]]
    assert 'data-reload-on-end="true"' in page.text and 'id="cancel"' in page.text
    embedded = re.search(r'id="plot-data">(.*?)</script>', page.text, re.S)
    assert embedded
    plot = json.loads(embedded.group(1))["sweep"]
    assert plot == views.sweep_plot(SweepInfo.model_validate(api))
    assert plot["values"] == [0.8, 0.95, None] and plot["best"] == [None, 0.95, None]
    compare = re.search(r'id="compare-best" href="([^"]+)"', page.text)
    assert compare  # the best first, then the next
    link = compare.group(1).replace("&amp;", "&")
    assert link == f"/training/ui/compare?run={swept.runs[1]}&run={swept.runs[0]}"
    assert member.get(link.removeprefix("/training/ui")).status_code == 200
    assert '<code>{"C": [0.1, 1.0, 10.0], "max_iter": [300]}</code>' in page.text  # the grid


def test_the_runs_pages_name_a_runs_sweep_and_worker_and_filter_by_sweep(
    member: Visitor, swept: Swept
) -> None:
    unswept = member.api.finished_run("iris-logistic_regression")
    everything = member.get("/")
    assert ">Sweep</th>" in everything.text and ">Worker</th>" in everything.text
    row = _row(everything.text, "data-run", swept.runs[0])
    assert (
        f'<a href="/training/ui/sweeps/{swept.id}"><code class="id">{swept.id[:8]}</code></a>'
        in row
    )
    assert 'data-field="worker">host-b-1<' in row
    filtered = member.get("/", params={"filter": f"sweep = {swept.id}"})
    assert sorted(re.findall(r'<tr data-run="([0-9a-f]+)"', filtered.text)) == sorted(swept.runs)
    assert unswept not in filtered.text
    run = member.get(f"/runs/{swept.runs[0]}")
    assert said(run, "worker") == "host-b-1"
    assert f'href="/training/ui/sweeps/{swept.id}"' in run.text.split('id="sweep"')[1][:200]
    plain = member.get(f"/runs/{unswept}")
    assert 'id="sweep"' not in plain.text and 'id="worker"' not in plain.text
    only_local = member.get("/", params={"filter": f"run_id = {unswept}"})
    assert ">Sweep</th>" not in only_local.text and ">Worker</th>" not in only_local.text


def test_cancel_from_the_sweep_page_needs_its_token_and_stops_the_whole_sweep(
    member: Visitor, swept: Swept, keys: dict[str, str]
) -> None:
    member.get(f"/sweeps/{swept.id}")
    token = member.csrf
    for forged in ("", "forged"):
        member.csrf = forged
        refused = member.post(f"/sweeps/{swept.id}/cancel")
        assert refused.status_code == 403 and "stale" in said(refused, "error")
    assert _api_sweep(member, swept)["status"] == "RUNNING"
    assert member.api.executor.queue == swept.runs  # nothing was cancelled
    member.csrf = token
    answer = member.post(f"/sweeps/{swept.id[:8]}/cancel")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/training/ui/sweeps/{swept.id}"
    api = _api_sweep(member, swept)
    assert api["status"] == "KILLED" and api["progress"] == {"done": 3, "total": 3}
    statuses = [member.api.store.get_run(r).status for r in swept.runs]
    assert statuses == [RunStatus.FINISHED, RunStatus.FINISHED, RunStatus.KILLED]
    assert swept.runs[2] not in member.api.executor.queue
    assert member.post(f"/sweeps/{swept.id}/cancel").status_code == 303  # ended: shown as is
    page = member.get(f"/sweeps/{swept.id}")
    assert 'id="cancel"' not in page.text and "data-live=" not in page.text
    assert 'data-reload-on-end="true"' not in page.text
    missing = member.post("/sweeps/0123456789abcdef/cancel")
    assert missing.status_code == 404 and said(missing, "error") == "no sweep '0123456789abcdef'"
    assert member.get("/sweeps/0123456789abcdef").status_code == 404
