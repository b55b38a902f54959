"""The dashboard in a real browser: Debian's Chromium driven by Playwright, through the real edge
(Caddy with its Content-Security-Policy, HTTPS from its local CA) to a real `training serve`
whose jobs are real processes. One service, one edge and one browser for the whole module.

Screenshots of every page go to ``test-output/ui/`` at the repository's root (git-ignored).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from servers import (
    REPO,
    Server,
    browser_reason,
    caddy,
    free_port,
    launch_chromium,
    serve_training,
)
from training.learning.pipeline import train
from training.learning.request import TrainRequest
from training.ops.edge import caddy_env
from training.ops.keys import KeyRing
from training.settings import EdgeSettings, Settings
from training.store import revision
from training.store.db import Database
from training.store.deployments import Deployments
from training.store.registry import Registry
from training.store.runs import RunStore

pytestmark = pytest.mark.slow

SHOTS = REPO / "test-output" / "ui"
# Long enough to be caught running: thousands of trees on digits, fold after fold.
SLOW_FORM = {"dataset": "digits", "model": "random_forest", "cv": "5"}
TINY_CSV = "size,label\n" + "".join(f"{i},{'big' if i > 4 else 'small'}\n" for i in range(10))
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser_available() -> None:
    reason = browser_reason()
    if reason is None:
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def spki_pin(certificate: Path) -> str:
    """The certificate's public key as Chromium's --ignore-certificate-errors-spki-list takes
    it: so the browser trusts exactly the edge's own CA, nothing else."""
    key = subprocess.run(
        ["openssl", "x509", "-in", str(certificate), "-pubkey", "-noout"],
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=key, capture_output=True, check=True
    ).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class Dashboard:
    url: str  # https://localhost:PORT/training/ui
    server: Server
    caddy_log: Path
    admin_key: str
    predict_key: str
    runs: dict[str, str]  # what was trained before the service started, by name
    tags: dict[str, str]
    store: RunStore
    browser: Any
    problems: list[str] = field(default_factory=list)  # console errors, CSP refusals

    def page(self, signed_in: bool = True) -> Any:
        """A page in a new browser context (its own cookies), logged in unless told not."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.on("response", self._response)
        page.on("dialog", lambda dialog: dialog.accept())
        if signed_in:
            page.goto(f"{self.url}/login")
            page.fill("#key", self.admin_key)
            page.click("#login")
            page.wait_for_url(f"{self.url}/")
        return page

    def _console(self, message: Any) -> None:
        # A refused page (a wrong key's 401) is logged as a failed load: answers are judged
        # by _response instead, which knows a page from the files it loads.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.problems.append(f"{response.status} {response.url}")

    def shot(self, page: Any, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _seed(data: Path) -> tuple[RunStore, dict[str, str], dict[str, str]]:
    """Runs trained in this process before the service starts (cheap: no job process each),
    the first promoted and made live as a running stack would have."""
    db = Database(f"sqlite:///{data / 'sql_app.db'}")
    revision.upgrade(db)
    store = RunStore(db)
    requests = {
        "iris": TrainRequest(dataset="iris", model="logistic_regression", cv=3),
        "cancer": TrainRequest(
            dataset="breast_cancer", model="random_forest", params={"n_estimators": 20}, cv=0
        ),
        "diabetes": TrainRequest(dataset="diabetes", model="ridge", cv=3),
    }
    runs, tags = {}, {}
    for name, request in requests.items():
        result = train(request, Settings(), store, lambda stage, fraction: None)
        assert result.model_tag is not None
        runs[name], tags[name] = result.run_id, result.model_tag
    Registry(db).promote(tags["iris"], "production", requested_by="tests")
    deployments = Deployments(db)
    deployments.went_live(deployments.begin("production", None, tags["iris"], "tests"))
    return store, runs, tags


@pytest.fixture(scope="module")
def dashboard(
    browser_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("dashboard")
    data = tmp / "data"
    keys = KeyRing(data / "api_keys.json")
    _, admin = keys.create("tests-admin", "admin")
    _, predict = keys.create("tests-predict", "predict")
    store, runs, tags = _seed(data)
    edge = EdgeSettings(https_port=free_port(), http_port=free_port(), caddy_data_dir=tmp / "caddy")
    with serve_training(
        data, tmp / "serve.log", REQUIRE_API_KEY="true", TRAINING_MAX_JOBS="2"
    ) as server:
        env = caddy_env(
            edge,
            service_ports=[free_port()],
            max_body_bytes=1_048_576,
            service_workers=1,
            training_port=int(server.url.rsplit(":", 1)[1]),
            max_upload_mb=2,  # above MAX_BODY_BYTES: uploads have their own limit at the edge
        )
        with caddy(env, tmp / "caddy.log"), sync_playwright() as playwright:
            authority = tmp / "caddy" / "pki" / "authorities" / "local"
            pins = ",".join(spki_pin(authority / f"{c}.crt") for c in ("intermediate", "root"))
            browser = launch_chromium(playwright, f"--ignore-certificate-errors-spki-list={pins}")
            try:
                yield Dashboard(
                    f"https://localhost:{edge.https_port}/training/ui",
                    server,
                    tmp / "caddy.log",
                    admin,
                    predict,
                    runs,
                    tags,
                    store,
                    browser,
                )
            finally:
                browser.close()


@pytest.fixture
def clean(dashboard: Dashboard) -> Iterator[Dashboard]:
    """The dashboard, and afterwards: no console error and no CSP refusal on any page."""
    dashboard.problems.clear()
    yield dashboard
    assert dashboard.problems == []


def _rows(page: Any) -> list[str]:
    return [
        str(r)
        for r in page.eval_on_selector_all("#runs tr[data-run]", "rs => rs.map(r => r.dataset.run)")
    ]


def test_log_in_with_an_admin_key_the_key_never_in_a_url_storage_or_log(clean: Dashboard) -> None:
    page = clean.page(signed_in=False)
    page.goto(f"{clean.url}/")
    assert page.url.startswith(f"{clean.url}/login?next=")  # sent to log in first
    clean.shot(page, "01-login")
    for key, said in ((clean.predict_key, "may only predict"), ("tk_nonsense", "invalid")):
        page.fill("#key", key)
        page.click("#login")
        assert said in page.inner_text("#login-error")
    page.fill("#key", clean.admin_key)
    page.click("#login")
    page.wait_for_url(f"{clean.url}/")
    [cookie] = page.context.cookies()
    assert cookie["name"] == "training_ui" and cookie["path"] == "/training/ui"
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert 7.9 * 3600 < cookie["expires"] - time.time() <= 8 * 3600
    secret = clean.admin_key.split("_", 2)[2]
    assert (
        secret not in cookie["value"]
        and secret not in base64.urlsafe_b64decode(cookie["value"].split(".")[0] + "==").decode()
    )
    stored = page.evaluate(
        "() => [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage)]"
    )
    assert stored == ["", "{}", "{}"]
    history = page.evaluate("() => performance.getEntriesByType('navigation').map(e => e.name)")
    assert not any(secret in url for url in [page.url, *history])
    for log in (clean.server.log, clean.caddy_log):
        assert secret not in log.read_text(errors="replace")


def test_the_runs_table_lists_runs_a_filter_narrows_it_a_bad_filter_says_why(
    clean: Dashboard,
) -> None:
    page = clean.page()
    everything = _rows(page)
    assert set(clean.runs.values()) <= set(everything)
    assert "accuracy" in page.inner_text("#runs thead")
    clean.shot(page, "02-runs")
    page.fill("#filter", "metrics.accuracy > 0.9")
    page.fill("#order_by", "metrics.accuracy desc")
    page.click("#search")
    page.wait_for_url(re.compile(r".*filter=metrics"))
    narrowed = _rows(page)
    assert clean.runs["iris"] in narrowed and clean.runs["diabetes"] not in narrowed
    accuracies = page.eval_on_selector_all(
        '#runs td[data-metric="accuracy"]', "cells => cells.map(c => Number(c.textContent))"
    )
    assert accuracies == sorted(accuracies, reverse=True) and min(accuracies) > 0.9
    clean.shot(page, "03-runs-filtered")
    page.fill("#filter", "metrics.accuracy >")
    page.click("#search")
    page.wait_for_selector("#search-error")
    assert page.inner_text("#search-error").startswith("filter: incomplete condition")
    assert _rows(page) == []
    clean.shot(page, "04-runs-bad-filter")


def _points(page: Any, plot: str) -> int:
    page.wait_for_selector(f'[data-plot="{plot}"][data-points] canvas')
    return int(page.get_attribute(f'[data-plot="{plot}"]', "data-points"))


def test_a_run_page_shows_its_plots_with_data(clean: Dashboard) -> None:
    page = clean.page()
    page.goto(f"{clean.url}/runs/{clean.runs['iris']}")
    folds = {p.key for p in clean.store.metric_history(clean.runs["iris"]) if p.step > 0}
    plots = page.locator("[data-plot^=steps-]").count()
    # Every fold metric, three folds each (the scores in one plot, log loss in its own).
    assert sum(_points(page, f"steps-{n}") for n in range(plots)) == 3 * len(folds) > 3 * 3
    assert _points(page, "roc") > 3 * 10
    cells = page.eval_on_selector_all("#confusion td", "cs => cs.map(c => Number(c.textContent))")
    assert len(cells) == 9 and sum(cells) == 30  # the held-out 20% of 150 rows
    assert "petal" in page.inner_text("#importances")
    assert re.fullmatch(r"[0-9a-f]{64}", page.inner_text("#dataset .sha"))
    assert "scikit-learn" in page.inner_text("#environment")
    clean.shot(page, "05-run-classifier")
    page.goto(f"{clean.url}/runs/{clean.runs['diabetes']}")
    assert _points(page, "scatter") == 2 * 89  # predicted and the perfect line, per held-out row
    assert _points(page, "histogram") == 20
    assert "mean" in page.inner_text("#residuals")
    clean.shot(page, "06-run-regressor")


def test_compare_two_runs(clean: Dashboard) -> None:
    page = clean.page()
    assert page.is_disabled("#compare")
    for name in ("iris", "cancer"):
        page.check(f'input[name=run][value="{clean.runs[name]}"]')
    assert page.inner_text("#selected") == "2 selected" and page.is_enabled("#compare")
    page.click("#compare")
    page.wait_for_url(re.compile(r".*/compare\?run="))
    differing = page.eval_on_selector_all(
        "#compare-params tr.differs th", "hs => hs.map(h => h.textContent)"
    )
    assert {"dataset", "model"} <= set(differing) and "seed" not in differing
    bars = page.eval_on_selector_all(
        "#compare-metrics td.metric rect", "rs => rs.map(r => Number(r.getAttribute('width')))"
    )
    assert bars and max(bars) == 100
    clean.shot(page, "07-compare")


def test_promote_a_version_with_the_button_and_see_the_alias_move(clean: Dashboard) -> None:
    page = clean.page()
    page.goto(f"{clean.url}/models")
    target = '#alias-production [data-field="target"]'
    assert page.inner_text(target) == clean.tags["iris"]
    page.click(f'tr[data-tag="{clean.tags["cancer"]}"] form.promote button')
    page.wait_for_url(re.compile(r".*moved=production"))
    assert page.inner_text(target) == clean.tags["cancer"]
    # The running stack still serves the version it made live, until it rolls the new one out.
    assert page.inner_text('#alias-production [data-field="live"]') == clean.tags["iris"]
    assert "by ui:tests-admin" in page.inner_text("#aliases")
    clean.shot(page, "08-models-promoted")
    page.click("#alias-production button.rollback")
    page.wait_for_url(re.compile(r".*moved=production"))
    assert page.inner_text(target) == clean.tags["iris"]


def _drop_file(page: Any, selector: str, name: str, text: str) -> None:
    """A file dropped on the element, as a person drags one from their desktop."""
    transfer = page.evaluate_handle(
        """([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, {type: "text/csv"}));
            return transfer;
        }""",
        [name, text],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_upload_by_drag_and_drop_then_a_training_that_fails_shows_its_log(
    clean: Dashboard,
) -> None:
    page = clean.page()
    page.goto(f"{clean.url}/datasets")
    _drop_file(page, "#drop", "tiny.csv", TINY_CSV)
    page.wait_for_selector("#uploads tr[data-dataset]")  # the page reloads once it is stored
    dataset = page.get_attribute("#uploads tr[data-dataset]", "data-dataset")
    clean.shot(page, "09-datasets")
    page.select_option("#dataset", dataset)
    page.fill("#cv", "20")  # more folds than the 8 training rows: the job fails
    page.click("#start")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f]{32}$"))
    page.wait_for_selector("#log", timeout=120_000)  # followed live, then shown as it ended
    assert page.inner_text("#run .status") == "FAILED"
    assert "n_splits=20" in page.inner_text("#run-error")
    assert page.inner_text("#log").strip()
    clean.shot(page, "10-run-failed-log")


def test_a_bad_form_is_refused_with_its_reason_and_nothing_queued(clean: Dashboard) -> None:
    page = clean.page()
    before = len(_rows(page))
    page.goto(f"{clean.url}/datasets")
    page.fill("#params", "no_such_parameter=1")
    page.click("#start")
    page.wait_for_selector("#train-error")
    assert "unknown parameter 'no_such_parameter'" in page.inner_text("#train-error")
    assert page.input_value("#params") == "no_such_parameter=1"  # the form as it was typed
    page.goto(f"{clean.url}/")
    assert len(_rows(page)) == before


def test_cancel_a_running_training(clean: Dashboard) -> None:
    page = clean.page()
    page.goto(f"{clean.url}/datasets")
    page.select_option("#dataset", SLOW_FORM["dataset"])
    page.select_option("#model", SLOW_FORM["model"])
    page.fill("#params", "n_estimators=3000")
    page.fill("#cv", SLOW_FORM["cv"])
    page.click("#start")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f]{32}$"))
    run_id = page.url.rsplit("/", 1)[1]
    # Live: the page follows the job through the event stream, without a reload.
    page.wait_for_function(
        "() => document.querySelector('#run [data-field=stage]').textContent"
        ".startsWith('cross-validation')",
        timeout=120_000,
    )
    assert page.inner_text("#run .status") == "RUNNING"
    assert float(page.get_attribute("#run progress", "value") or 0) > 0
    clean.shot(page, "11-run-live")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#run .status').textContent === 'KILLED'")
    assert clean.store.get_run(run_id).status == "KILLED"
    assert not page.is_visible("#cancel")
    clean.shot(page, "12-run-cancelled")


def test_log_out_ends_the_session_even_for_a_copied_cookie(clean: Dashboard) -> None:
    page = clean.page()
    [cookie] = page.context.cookies()
    page.click("#logout")
    page.wait_for_url(f"{clean.url}/login")
    page.goto(f"{clean.url}/models")
    assert page.url.startswith(f"{clean.url}/login?next=")
    clean.shot(page, "13-logged-out")
    other = clean.page(signed_in=False)
    other.context.add_cookies([cookie])
    other.goto(f"{clean.url}/")
    assert other.url.startswith(f"{clean.url}/login")


def test_the_edge_sends_the_dashboard_a_strict_content_security_policy(
    dashboard: Dashboard,
) -> None:
    page = dashboard.page(signed_in=False)
    answer = page.goto(f"{dashboard.url}/login")
    assert answer is not None
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    # On the dashboard's own page, an inline script is refused, and the refusal reported.
    refused = page.evaluate(
        """() => new Promise(done => {
            document.addEventListener("securitypolicyviolation", e => done(e.violatedDirective));
            const s = document.createElement("script");
            s.textContent = "window.ran = true";
            document.body.appendChild(s);
            setTimeout(() => done(window.ran ? "ran" : "nothing"), 2000);
        })"""
    )
    assert refused.startswith("script-src")
    assert json.loads(page.evaluate("() => JSON.stringify(window.ran || false)")) is False


def test_an_upload_from_the_page_has_the_upload_limit_at_the_edge(clean: Dashboard) -> None:
    """1.5 MB passes (over MAX_BODY_BYTES, under TRAINING_MAX_UPLOAD_MB); 2.5 MB is a 413."""
    page = clean.page()
    page.goto(f"{clean.url}/datasets")
    statuses = page.evaluate(
        """async (sizes) => {
            const answers = [];
            for (const rows of sizes) {
                const body = "a,b\\n" + "1234567,x\\n".repeat(rows);
                const token = document.body.dataset.csrf;
                const answer = await fetch(document.getElementById("drop").dataset.upload, {
                    method: "POST", body: body,
                    headers: {"Content-Type": "text/csv", "X-CSRF-Token": token},
                });
                answers.push(answer.status);
            }
            return answers;
        }""",
        [150_000, 250_000],
    )
    assert statuses == [201, 413]
    clean.problems.remove(next(p for p in clean.problems if p.startswith("413 ")))
