"""The dashboard in process: its access rules (login, cookie, CSRF, logout), each page's answers
and refusals, and that its forms reach the same rules as the API. A browser drives it for real in
``test_ui_browser.py``; these are the rules, one by one, over the real app and store."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from inprocess import CSV, Api, open_api

from training.api.ui import views
from training.ops.keys import KeyRing
from training.store.records import (
    ConfusionMatrix,
    DatasetInfo,
    Evaluation,
    Importance,
    RocCurve,
    RunStatus,
)
from training.store.registry import Registry

EDGE = {"X-Forwarded-Prefix": "/training"}  # what the edge adds: links as the browser sees them


@dataclass
class Visitor:
    """A browser's view of the dashboard: its cookies, the CSRF token of the last page."""

    api: Api
    csrf: str = ""

    @property
    def client(self) -> Any:
        return self.api.client

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        page = self.client.get(f"/ui{path}", headers=EDGE, follow_redirects=False, **kwargs)
        found = re.search(r'data-csrf="([^"]+)"', page.text)
        if found:
            self.csrf = found.group(1)
        return page

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.client.post(
            f"/ui{path}",
            data={"csrf": self.csrf, **fields},
            headers=EDGE,
            follow_redirects=False,
        )

    def log_in(self, key: str, next: str = "/") -> httpx.Response:
        self.get("/login")
        return self.post("/login", key=key, next=next)


def _said(page: httpx.Response, element: str) -> str:
    found = re.search(rf'id="{element}">([^<]*)<', page.text)
    assert found, page.text[:2000]
    return found.group(1).replace("&#39;", "'").replace("&gt;", ">").replace("&lt;", "<")


@pytest.fixture
def keys(env: Path) -> dict[str, str]:
    ring = KeyRing(env / "api_keys.json")
    return {"admin": ring.create("admin", "admin")[1], "predict": ring.create("p", "predict")[1]}


@pytest.fixture
def site(env: Path, keys: dict[str, str]) -> Iterator[Visitor]:
    """The dashboard with keys required, seen over HTTPS (its cookie is Secure)."""
    with open_api(env, require_api_key=True) as api:
        api.client.base_url = "https://testserver/training"
        yield Visitor(api)


@pytest.fixture
def member(site: Visitor, keys: dict[str, str]) -> Visitor:
    assert site.log_in(keys["admin"]).status_code == 303
    return site


def _cookie(answer: httpx.Response) -> dict[str, str]:
    """The Set-Cookie of an answer: its value and attributes (lower-case names)."""
    header = answer.headers["set-cookie"]
    name_value, *attributes = [part.strip() for part in header.split(";")]
    parsed = dict(a.lower().split("=", 1) if "=" in a else (a.lower(), "") for a in attributes)
    return {"value": name_value.split("=", 1)[1], **parsed}


def test_pages_need_a_login_the_api_keeps_its_keys_and_static_files_are_open(site: Visitor) -> None:
    for path in ("/", "/models", "/datasets", "/runs/0123456789ab", "/compare?run=a&run=b"):
        answer = site.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/training/ui/login?next=%2F")
    assert site.get("/models").headers["location"] == "/training/ui/login?next=%2Fmodels"
    assert site.client.get("/ui/events?run=abc").status_code == 401  # JSON for the scripts
    upload = site.client.post("/ui/datasets", content=CSV, headers={"Content-Type": "text/csv"})
    assert upload.status_code == 401 and "log in" in upload.json()["error"]
    assert site.client.get("/runs").status_code == 401  # the API still wants its key
    assert site.client.get("/ui/static/ui.css").status_code == 200


def test_login_sets_a_signed_expiring_cookie_that_holds_no_key(
    site: Visitor, keys: dict[str, str]
) -> None:
    refused = site.log_in("tk_000000000000_" + "x" * 43)
    assert (
        refused.status_code == 401 and _said(refused, "login-error") == "invalid or revoked API key"
    )
    scoped = site.log_in(keys["predict"])
    assert scoped.status_code == 403 and "only predict" in _said(scoped, "login-error")
    answer = site.log_in(keys["admin"], next="/models?moved=x")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/training/ui/models?moved=x"
    cookie = _cookie(answer)
    assert {"httponly", "secure"} <= set(cookie) and cookie["samesite"] == "strict"
    assert cookie["path"] == "/training/ui" and cookie["max-age"] == str(8 * 3600)
    payload = json.loads(base64.urlsafe_b64decode(cookie["value"].split(".")[0] + "=="))
    assert payload["name"] == "admin" and set(payload) == {"sid", "exp", "kid", "name"}
    assert keys["admin"].split("_", 2)[2] not in cookie["value"]
    assert site.get("/").status_code == 200
    # Nowhere else: a next path off the site becomes the dashboard's start.
    assert site.log_in(keys["admin"], next="//evil.example/").headers["location"] == (
        "/training/ui/"
    )


def test_the_key_never_reaches_a_log(
    site: Visitor, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        site.log_in(keys["admin"])
        site.log_in(keys["predict"])
        site.get("/")
    assert caplog.text and "/ui/login" in caplog.text
    for key in keys.values():
        assert key.split("_", 2)[2] not in caplog.text


def test_a_revoked_key_ends_its_sessions_within_a_second(member: Visitor, env: Path) -> None:
    assert member.get("/").status_code == 200
    KeyRing(env / "api_keys.json").revoke("admin")
    time.sleep(0.6)  # the key file is read again at most every 0.5 s
    assert member.get("/").status_code == 303


def _with_cookie(site: Visitor, value: str) -> httpx.Response:
    site.client.cookies.clear()
    return site.client.get(
        "/ui/", headers={**EDGE, "Cookie": f"training_ui={value}"}, follow_redirects=False
    )


def test_a_tampered_or_foreign_cookie_is_no_session(member: Visitor) -> None:
    value = member.client.cookies.get("training_ui")
    assert _with_cookie(member, value).status_code == 200
    payload, mac = value.split(".")
    longer = json.loads(base64.urlsafe_b64decode(payload + "=="))
    longer["exp"] += 3600
    forged = base64.urlsafe_b64encode(json.dumps(longer).encode()).decode().rstrip("=")
    for value in (f"{forged}.{mac}", f"{payload}.{mac[:-2]}AA", "garbage", "a.b.c", "x" * 2000):
        assert _with_cookie(member, value).status_code == 303, value


@pytest.fixture
def versions(member: Visitor) -> list[str]:
    """Two registered versions (runs as a worker leaves them)."""
    return [
        f"{tag}:{member.api.finished_run(tag)}"
        for tag in ("iris-logistic_regression", "wine-random_forest")
    ]


def test_forms_without_their_session_csrf_token_change_nothing(
    member: Visitor, versions: list[str], keys: dict[str, str]
) -> None:
    member.get("/models")
    old = member.csrf
    member.log_in(keys["admin"])  # a new session: the old page's token no longer fits
    for token in ("", "forged", old):
        member.csrf = token
        refused = member.post("/models/promote", model_tag=versions[0], alias="production")
        assert refused.status_code == 403 and "stale" in _said(refused, "error")
        assert member.post("/runs", dataset="iris", model="ridge").status_code == 403
        assert member.post("/logout").status_code == 403
    assert Registry(member.api.store.db).list_aliases() == [] and member.api.executor.queue == []
    member.client.cookies.clear()  # no session at all: even the login form is refused
    assert member.post("/login", key=keys["admin"]).status_code == 403


def test_log_out_ends_the_session_and_a_copy_of_its_cookie(member: Visitor) -> None:
    copy = member.client.cookies.get("training_ui")
    member.get("/")
    answer = member.post("/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/training/ui/login"
    assert (
        'training_ui=""' in answer.headers["set-cookie"]
        or "Max-Age=0" in answer.headers["set-cookie"]
    )
    assert _with_cookie(member, copy).status_code == 303


# -- the pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["metrics.accuracy >", "colour = red", "metrics.accuracy > high", "status = FINISHED or"],
)
def test_a_bad_filter_says_what_get_runs_says_above_an_empty_table(
    member: Visitor, keys: dict[str, str], text: str
) -> None:
    page = member.get("/", params={"filter": text})
    api = member.client.get(
        "/runs", params={"filter": text}, headers={"Authorization": f"Bearer {keys['admin']}"}
    )
    assert page.status_code == api.status_code == 400
    assert page.headers["content-type"].startswith("text/html")  # a page, not the API's JSON
    assert _said(page, "search-error") == api.json()["error"]
    assert "data-run=" not in page.text


def test_the_runs_page_pages_by_keyset_as_get_runs_does(
    member: Visitor, keys: dict[str, str]
) -> None:
    made = [member.api.finished_run(f"m{i}") for i in range(7)]
    order = {"filter": "metrics.accuracy > 0.5", "order_by": "metrics.accuracy desc", "limit": "3"}
    seen, page = [], member.get("/", params=order)
    while True:
        seen += re.findall(r'<tr data-run="([0-9a-f]+)"', page.text)
        found = re.search(r'id="next-page" href="([^"]+)"', page.text)
        if not found:
            break
        link = found.group(1).replace("&amp;", "&")
        assert link.startswith("/training/ui/?")
        page = member.get(link.removeprefix("/training/ui"))
    api = member.client.get(
        "/runs", params={**order, "limit": 7}, headers={"Authorization": f"Bearer {keys['admin']}"}
    )
    assert seen == [run["id"] for run in api.json()["runs"]] and sorted(seen) == sorted(made)


def _evaluation() -> Evaluation:
    return Evaluation(
        rows=4,
        confusion=ConfusionMatrix(labels=["a", "b"], counts=[[2, 0], [1, 1]]),
        roc=[RocCurve(label="b", fpr=[0, 0.5, 1], tpr=[0, 1, 1], auc=0.75)],
        importances=[Importance(feature="size", value=0.7), Importance(feature="<b>", value=0.3)],
        importance_kind="impurity",
    )


def test_a_run_page_carries_its_artefacts_and_the_end_of_a_failed_runs_log(
    member: Visitor, env: Path
) -> None:
    store = member.api.store
    run_id = store.create_run(
        experiment="ui",
        model_name="random_forest",
        task="classification",
        dataset=DatasetInfo(name="iris"),
        params={"n_estimators": "10"},
    )
    store.log_metrics(run_id, [("cv_fold_accuracy", 0.8, 1), ("cv_fold_accuracy", 0.9, 2)])
    store.finish(run_id, RunStatus.FINISHED, evaluation=_evaluation())
    page = member.get(f"/runs/{run_id}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    embedded = re.search(r'id="plot-data">(.*?)</script>', page.text, re.S)
    assert embedded and json.loads(embedded.group(1)) == json.loads(
        json.dumps(views.plot_data(store.metric_history(run_id), _evaluation()))
    )
    assert "&lt;b&gt;" in page.text and "<b>" not in page.text.split('id="importances"')[1][:400]
    failed = store.create_run(
        experiment="ui",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
    )
    store.finish(failed, RunStatus.FAILED, error="ValueError: no")
    logs = env / "logs" / "runs"
    logs.mkdir(parents=True)
    (logs / f"{failed}.log").write_text("x" * 70_000 + "\nfirst\n<script>alert(1)</script>\nlast\n")
    page = member.get(f"/runs/{failed}")
    log = page.text.split('id="log">')[1].split("</pre>")[0]
    assert log.startswith("...\nfirst") and log.endswith("last\n") and len(log) < 70_000
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in log  # text, never markup
    assert "ValueError: no" in page.text


def test_refused_pages_are_pages_with_their_status(member: Visitor) -> None:
    missing = member.get("/runs/0123456789abcdef")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert (
        _said(missing, "error") == "no run '0123456789abcdef'" and missing.headers["x-request-id"]
    )
    assert member.get("/", params={"limit": "0"}).status_code == 400
    assert member.client.get("/runs/0123456789abcdef").headers["content-type"] == (
        "application/json"
    )  # the API's own refusals stay JSON


@pytest.mark.parametrize("count", [1, 6])
def test_compare_takes_two_to_five_runs(member: Visitor, count: int) -> None:
    runs = [member.api.finished_run(f"m{i}") for i in range(count)]
    page = member.get("/compare", params=[("run", r) for r in runs])
    assert page.status_code == 400 and f"(got {count})" in _said(page, "error")


def test_compare_marks_the_parameters_that_differ(member: Visitor) -> None:
    store = member.api.store
    runs = [
        store.create_run(
            experiment="ui",
            model_name="ridge",
            task="regression",
            dataset=DatasetInfo(name="diabetes"),
            params={"alpha": alpha, "solver": "auto"},
        )
        for alpha in ("1.0", "2.0")
    ]
    page = member.get("/compare", params=[("run", r[:8]) for r in runs])  # prefixes will do
    assert page.status_code == 200
    assert re.search(r'<tr class="differs"><th>alpha</th>', page.text)
    assert re.search(r'<tr class="same"><th>solver</th>', page.text)


def test_promote_and_rollback_through_the_forms(member: Visitor, versions: list[str]) -> None:
    member.get("/models")
    for tag in versions:
        moved = member.post("/models/promote", model_tag=tag, alias="production")
        assert moved.status_code == 303
        assert moved.headers["location"] == "/training/ui/models?moved=production#alias-production"
    alias = Registry(member.api.store.db).get_alias("production")
    assert alias.model_tag == versions[1] and alias.history[-1].requested_by == "ui:admin"
    assert member.post("/aliases/production/rollback").status_code == 303
    assert Registry(member.api.store.db).get_alias("production").model_tag == versions[0]
    page = member.get("/models")
    assert f'data-field="target">{versions[0]}' in page.text
    unknown = member.post("/models/promote", model_tag="nope:1", alias="production")
    assert unknown.status_code == 404 and "no model version 'nope:1'" in _said(
        unknown, "models-error"
    )
    bad = member.post("/models/promote", model_tag=versions[0], alias="Prod!")
    assert bad.status_code == 400 and "not a valid name" in _said(bad, "models-error")
    assert member.post("/aliases/staging/rollback").status_code == 404


def test_the_training_form_queues_what_post_runs_would(
    member: Visitor, keys: dict[str, str]
) -> None:
    member.get("/datasets")
    form = {
        "dataset": "iris",
        "model": "random_forest",
        "cv": "3",
        "seed": "7",
        "params": "n_estimators=25\n\nmax_depth=null",
        "tags": "team=vision\nnote=42",
    }
    answer = member.post("/runs", **form)
    assert answer.status_code == 303
    run_id = answer.headers["location"].rsplit("/", 1)[1]
    assert member.api.executor.queue == [run_id]
    body = {
        "dataset": "iris",
        "model": "random_forest",
        "cv": 3,
        "seed": 7,
        "params": {"n_estimators": 25, "max_depth": None},
        "tags": {"team": "vision", "note": "42"},
    }
    api = member.client.post(
        "/runs", json=body, headers={"Authorization": f"Bearer {keys['admin']}"}
    )
    stored = [member.api.store.get_run(r).request for r in (run_id, api.json()["run_id"])]
    assert stored[0] == stored[1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "svm"}, "unknown classification model 'svm'"),
        ({"params": "depth=3"}, "unknown parameter 'depth'"),
        ({"params": "no equals sign"}, "params: line 1: expected key=value"),
        ({"cv": "1"}, "cv must be 0"),
        ({"cv": "many"}, "invalid request: cv"),
        ({"dataset": "/etc/passwd"}, "paths on the server are not accepted"),
    ],
)
def test_a_refused_training_form_says_why_keeps_what_was_typed_and_queues_nothing(
    member: Visitor, fields: dict[str, str], message: str
) -> None:
    member.get("/datasets")
    answer = member.post("/runs", **{"dataset": "iris", "model": "logistic_regression", **fields})
    assert answer.status_code == 400 and message in _said(answer, "train-error")
    if "params" in fields:
        assert f">{fields['params']}</textarea>" in answer.text
    assert member.api.executor.queue == []


def test_uploads_need_the_pages_token_and_take_what_post_datasets_takes(member: Visitor) -> None:
    member.get("/datasets")
    headers = {"Content-Type": "text/csv", "X-CSRF-Token": member.csrf, **EDGE}
    stored = member.client.post("/ui/datasets", content=CSV, headers=headers)
    assert stored.status_code == 201 and stored.json()["rows"] == 60
    assert member.client.post("/ui/datasets", content=CSV, headers=headers).status_code == 200
    forged = member.client.post(
        "/ui/datasets", content=CSV, headers={**headers, "X-CSRF-Token": "forged"}
    )
    assert forged.status_code == 403 and forged.json()["error"].startswith("this form is stale")
    text = member.client.post(
        "/ui/datasets", content=CSV, headers={**headers, "Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    assert stored.json()["dataset_id"] in member.get("/datasets").text


def test_cancel_from_the_run_page(member: Visitor) -> None:
    member.get("/datasets")
    started = member.post("/runs", dataset="diabetes", model="ridge")
    run_id = started.headers["location"].rsplit("/", 1)[1]
    page = member.get(f"/runs/{run_id}")
    assert 'id="cancel"' in page.text and f'data-live="{run_id}"' in page.text
    assert member.post(f"/runs/{run_id}/cancel").status_code == 303
    assert member.api.store.get_run(run_id).status == RunStatus.KILLED
    assert member.post(f"/runs/{run_id}/cancel").status_code == 303  # ended: shown as it is
    assert 'id="cancel"' not in member.get(f"/runs/{run_id}").text


def test_the_event_feed_follows_several_runs_in_one_stream(member: Visitor) -> None:
    runs = [member.api.finished_run(f"m{i}") for i in range(2)]
    with member.client.stream("GET", "/ui/events", params=[("run", r) for r in runs]) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert sorted(json.loads(line[6:])["run_id"] for line in lines) == sorted(runs)
    assert member.client.get("/ui/events").status_code == 400


def test_without_keys_no_login_is_asked_but_forms_still_need_their_token(env: Path) -> None:
    with open_api(env) as api:
        api.client.base_url = "https://testserver/training"
        visitor = Visitor(api)
        assert visitor.get("/").status_code == 200 and 'id="logout"' not in visitor.get("/").text
        assert visitor.get("/login").status_code == 303
        tag = f"iris-logistic_regression:{api.finished_run('iris-logistic_regression')}"
        assert visitor.post("/models/promote", model_tag=tag).status_code == 303
        assert Registry(api.store.db).get_alias("production").history[-1].requested_by == "ui"
        visitor.csrf = ""
        assert visitor.post("/models/promote", model_tag=tag).status_code == 403


def test_on_the_services_own_port_links_and_cookie_have_no_edge_prefix(env: Path) -> None:
    with open_api(env, require_api_key=True) as api:
        api.client.base_url = "https://testserver"
        answer = api.client.get("/ui/", follow_redirects=False)
        assert answer.headers["location"] == "/ui/login?next=%2F"
        assert _cookie(answer)["path"] == "/ui"
        spoofed = api.client.get(
            "/ui/", headers={"X-Forwarded-Prefix": "/elsewhere"}, follow_redirects=False
        )
        assert spoofed.headers["location"].startswith("/ui/login")


def test_a_full_queue_refuses_the_form_with_retry_after(env: Path) -> None:
    with open_api(env, training_max_queued=0) as api:
        api.client.base_url = "https://testserver/training"
        visitor = Visitor(api)
        visitor.get("/datasets")
        refused = visitor.post("/runs", dataset="iris", model="logistic_regression")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "TRAINING_MAX_QUEUED" in _said(refused, "train-error")
