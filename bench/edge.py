"""Edge benchmark: single-row predictions directly against the service and through Caddy HTTPS.

    .venv/bin/python bench/edge.py [--duration 10] [--concurrency 1 8 32]

One run trains the iris model into a temporary home, starts the service as shipped (API keys
required) and Caddy with the repository's Caddyfile, then drives, side by side at each
concurrency, the service on loopback and the edge over HTTPS (TLS, headers, request ids, body
limit, health checks: everything `make up` runs). Prints requests/s, p50, p99 and errors, and
the ratio edge/direct. Floor (issue 4): through Caddy at least 0.7x the direct figure.
Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

from common import (
    IRIS_ROW,
    bench_setup,
    free_port,
    service_command,
    stop,
    tree_cpu_s,
    wait_ready,
    wrk,
)
from training.ops.edge import ca_certificate, caddy_env, start_caddy
from training.ops.keys import KeyRing
from training.settings import EdgeSettings, ServiceSettings


def main() -> None:
    args, work, env, tag = bench_setup("edge", __doc__ or "")
    _, key = KeyRing(work / "api_keys.json").create("bench", "predict")
    body = work / "one-row.json"
    body.write_text(json.dumps({"instances": [IRIS_ROW]}))
    headers = {"Authorization": f"Bearer {key}"}

    service_port = free_port()
    service_env = {**env, "REQUIRE_API_KEY": "true", "API_KEYS_FILE": str(work / "api_keys.json")}
    with (work / "service.log").open("wb") as log:
        service = subprocess.Popen(
            service_command(tag, service_port),
            env=service_env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    edge = EdgeSettings(
        https_port=free_port(), http_port=free_port(), caddy_data_dir=work / "caddy"
    )
    service_settings = ServiceSettings()  # the shipped defaults, as the service reads them
    env_edge = caddy_env(
        edge,
        service_ports=[service_port],
        max_body_bytes=1_048_576,
        service_workers=service_settings.service_workers,
        training_port=free_port(),  # no training service in this benchmark
        max_upload_mb=50,
    )
    caddy = start_caddy(env_edge, work / "caddy.log")
    direct = f"http://127.0.0.1:{service_port}/predict"
    through = f"https://127.0.0.1:{edge.https_port}/predict"
    rows: list[tuple[int, tuple[float, float, float, int], tuple[float, float, float, int]]] = []
    cpu_ms: list[tuple[float, float]] = []
    try:
        wait_ready(direct, body.read_bytes(), service, headers=headers)
        ca = ca_certificate(edge.caddy_data)
        wait_ready(
            through,
            body.read_bytes(),
            caddy,
            headers=headers,
            verify=ssl.create_default_context(cafile=ca),
        )
        for url in (direct, through):
            wrk(url, body, 8, 2, work, headers)  # warm-up
        for concurrency in args.concurrency:
            first = wrk(direct, body, concurrency, args.duration, work, headers)
            before = tree_cpu_s(service.pid), tree_cpu_s(caddy.pid)
            second = wrk(through, body, concurrency, args.duration, work, headers)
            requests = second[0] * args.duration
            cpu_ms.append(
                tuple(  # type: ignore[arg-type]
                    (after - was) / requests * 1000
                    for after, was in zip(
                        (tree_cpu_s(service.pid), tree_cpu_s(caddy.pid)), before, strict=True
                    )
                )
            )
            rows.append((concurrency, first, second))
            print(
                f"  c={concurrency:<2} direct {first[0]:7.0f} req/s, edge {second[0]:7.0f} req/s",
                file=sys.stderr,
            )
    finally:
        stop(caddy)
        stop(service)

    print(
        f"\nmodel {tag}; single-row POST /predict with an API key; wrk {args.duration} s per cell; "
        f"{service_settings.service_workers} service worker(s); "
        f"Caddy GOMAXPROCS={env_edge['GOMAXPROCS']}"
    )
    print("direct = http://127.0.0.1 (the service itself), edge = https through Caddy\n")
    head = (
        "conc",
        "direct req/s",
        "p50",
        "p99",
        "edge req/s",
        "p50",
        "p99",
        "errors",
        "edge/direct",
    )
    print("{:>4} {:>12} {:>6} {:>6} {:>11} {:>6} {:>6} {:>6} {:>11}".format(*head))
    for concurrency, (d_rps, d50, d99, d_err), (e_rps, e50, e99, e_err) in rows:
        cells = (concurrency, d_rps, d50, d99, e_rps, e50, e99, d_err + e_err, e_rps / d_rps)
        print(
            "{:4} {:12.0f} {:6.2f} {:6.2f} {:11.0f} {:6.2f} {:6.2f} {:6} {:10.2f}x".format(*cells)
        )
    costs = ", ".join(
        f"c={c}: service {svc:.3f}, caddy {cad:.3f}"
        for (c, _, _), (svc, cad) in zip(rows, cpu_ms, strict=True)
    )
    print(f"\nCPU per request through the edge (ms): {costs}")
    top, direct_top, edge_top = rows[-1][0], rows[-1][1][0], rows[-1][2][0]
    print(
        f"\nfloor (issue 4): requests/s through the edge >= 0.7x direct; at c={top}: "
        f"{edge_top / direct_top:.2f}x (at c=1 the ratio is latency: one more hop per request)"
    )


if __name__ == "__main__":
    main()
