"""A browser's view of the in-process dashboard (``inprocess.py``'s app): its cookies, the CSRF
token of the last page it read, and what a page says in one of its elements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from inprocess import Api

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


def said(page: httpx.Response, element: str) -> str:
    found = re.search(rf'id="{element}">([^<]*)<', page.text)
    assert found, page.text[:2000]
    return found.group(1).replace("&#39;", "'").replace("&gt;", ">").replace("&lt;", "<")
