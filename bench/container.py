"""The containerized prediction service beside `bentoml serve` of the same bento, in one run.

    .venv/bin/python bench/container.py [--duration 10] [--concurrency 1 8 32] [--cold]

Printed: the image's size; its build time warm (base image, wheels and podman's layers cached)
and, with --cold, cold (a new base image by debootstrap, the wheels downloaded again, no
layer of the image reused); seconds from start to the first ready answer of the container
(`podman run` as SERVICE_RUNTIME=container runs it: read-only root, keys mounted, published on
loopback) and of `bentoml serve` of the bento; single-row requests/s, p50 and p99 of both with
wrk at each concurrency (1 worker each, API keys required by both), and the ratio container /
process (floor 0.9x). Needs podman, runc, debootstrap and wrk (Debian's packages).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import (
    BIN,
    IRIS_ROW,
    bench_setup,
    free_port,
    stop,
    train_model,
    wait_until_ready,
    wrk,
)

FLOOR = 0.9


def cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [str(BIN / "training"), *args, "--json"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(done.stderr)
    return dict(json.loads(done.stdout))


def build(env: dict[str, str], tag: str) -> dict[str, object]:
    """The image of ``tag``'s bento (promoted to production)."""
    cli(env, "promote", tag, "--alias", "production")
    return cli(env, "containerize", "--alias", "production")


def started(
    args: list[str], env: dict[str, str], url: str
) -> tuple[subprocess.Popen[bytes], float]:
    began = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_ready(f"{url}/readyz", proc, timeout=180)
    return proc, time.monotonic() - began


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from training.ops.container import hand_over, mirror_keys, run_args
    from training.ops.image import BASE_RECIPE, base_image, podman_env

    args, work, env, tag = bench_setup("container", __doc__ or "", ("--cold",))
    if args.cold:
        env["CONTAINER_CACHE_DIR"] = str(work / "cache")  # no wheels
        old = base_image(Path(env["CONTAINER_CACHE_DIR"]), lambda *_: None)
        subprocess.run(["podman", "rmi", "--force", old], capture_output=True, check=False)
    first = build(env, tag)
    how = "cold" if args.cold else "first"
    print(f"{how} build: {first['seconds']} s (cold: {BASE_RECIPE}, the wheels, every layer)")
    # Another model's bento beside the first image: what a new version's build costs.
    warm = build(env, train_model(env))
    print(f"image {warm['image']}: {int(warm['size_bytes']) / 1e6:.0f} MB")
    print(f"warm build: {warm['seconds']} s (base image, wheels and the packages' layer reused)")

    key = cli(env, "keys", "create", "--name", "bench")["key"]
    keys = work / "keys"
    mirror_keys(work / "data" / "api_keys.json", keys)
    hand_over(keys)
    body = work / "row.json"
    body.write_text(json.dumps({"instances": [IRIS_ROW]}))
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    name = f"bench-container-{port}"
    servers = {
        "container": (
            run_args(str(warm["image"]), name, port, keys),
            podman_env(work / "cache"),
        ),
        "process": (
            [str(BIN / "bentoml"), "serve", str(warm["bento_tag"]), "--port", str(port)],
            {**env, "REQUIRE_API_KEY": "true", "SERVICE_WORKERS": "1"},
        ),
    }
    results: dict[str, dict[int, tuple[float, float, float, int]]] = {}
    for server, (command, server_env) in servers.items():
        url = f"http://127.0.0.1:{port}"
        proc, ready_s = started(command, server_env, url)
        print(f"{server}: ready {ready_s:.1f} s after its start")
        try:
            results[server] = {
                c: wrk(f"{url}/predict", body, c, args.duration, work, headers)
                for c in args.concurrency
            }
        finally:
            stop(proc)
            subprocess.run(["podman", "rm", "--force", "--ignore", name], capture_output=True)
    print(f"\n{'server':<10} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for server, runs in results.items():
        for c, (rps, p50, p99, errors) in runs.items():
            print(f"{server:<10} {c:>4} {rps:>8.0f} {p50:>8.1f} {p99:>8.1f} {errors:>6}")
    for c in args.concurrency:
        ratio = results["container"][c][0] / results["process"][c][0]
        verdict = "ok" if ratio >= FLOOR else f"BELOW the floor {FLOOR}x"
        print(f"c{c}: container / process = {ratio:.2f}x ({verdict})")


if __name__ == "__main__":
    main()
