"""``python -m modellens_jax.loadtest --bundle=B [--clients=8] [--requests=400] [--duration=60]``

A bounded load test of the HTTP service on this machine; prints one JSON document.

Starts ``python -m modellens_jax.serve_http`` on a free loopback port (``--atlas=off``, no access
log), waits for ``/healthz``, warms up, then ``--clients`` concurrent keep-alive clients send
``POST /recommend`` over the whole known pool (``pool=all``; each request a different known
dataset with its task, or ``--dataset_desc`` for a new one) until ``--requests`` are done or
``--duration`` seconds have passed, and reports requests/s and latency percentiles. Then
``--bad`` concurrent bad requests (malformed JSON, unknown fields, unknown tasks, 10 MB bodies)
and whether every one got a 4xx and the service still answered a good query. ``--url`` targets a
running service instead (loopback addresses only). Nothing else is contacted.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import flags

from modellens_jax import cli


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback(url: str) -> tuple[str, int]:
    """(host, port) of ``url``; ValueError unless it is a loopback address."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"--url={url}: only loopback addresses (127.0.0.0/8, ::1, localhost)")
    return host, u.port or 80


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def wait_healthy(host: str, port: int, timeout: float, proc: subprocess.Popen | None) -> dict:
    """Polls /healthz until it answers 200 (or the server exits / ``timeout`` passes)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            status, body = request(conn, "GET", "/healthz")
            conn.close()
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the service did not answer /healthz within {timeout:.0f} s")


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    if not len(a):
        return {}
    q = np.percentile(a, [50, 90, 99])
    return {"p50": round(q[0], 2), "p90": round(q[1], 2), "p99": round(q[2], 2),
            "mean": round(float(a.mean()), 2), "max": round(float(a.max()), 2)}  # fmt: skip


def run_load(
    host: str, port: int, bodies: Sequence[bytes], *, clients: int, requests: int, duration: float
) -> dict[str, Any]:
    """``clients`` threads send ``bodies`` round-robin until ``requests`` or ``duration``."""
    lock = threading.Lock()
    state = {"next": 0}
    lat: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        while time.monotonic() < deadline:
            with lock:
                i = state["next"]
                if i >= requests:
                    break
                state["next"] = i + 1
            t = time.perf_counter()
            try:
                status, _ = request(conn, "POST", "/recommend", bodies[i % len(bodies)])
            except OSError:
                status = -1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
            dt = (time.perf_counter() - t) * 1e3
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat.append(dt)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    done = sum(statuses.values())
    return {
        "clients": clients,
        "requests": done,
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_s": round(wall, 2),
        "requests_per_s": round(statuses.get(200, 0) / wall, 2) if wall else 0.0,
        "latency_ms": percentiles(lat),
    }


def bad_requests(host: str, port: int, n: int, good: bytes) -> dict[str, Any]:
    """``n`` concurrent bad requests of four kinds; each must get a 4xx with a JSON detail,
    and a good query sent among them must still succeed."""
    big = 10 * 1000 * 1000
    kinds = {
        "malformed_json": b'{"task": "Retrieval",',
        "unknown_field": b'{"dataset_desc": "x", "task": "Retrieval", "colour": "red"}',
        "unknown_task": b'{"dataset_desc": "x", "task": "zz-no-such-task"}',
        "body_10MB": None,
    }
    names = list(kinds)
    results: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)

    def one(i: int) -> None:
        kind = names[i % len(names)]
        status, detail = -1, ""
        try:
            with socket.create_connection((host, port), timeout=60) as s:
                barrier.wait(timeout=60)
                body = kinds[kind]
                length = big if body is None else len(body)
                s.sendall(
                    f"POST /recommend HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                    f"\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()
                )
                # a 10 MB body: the first 64 KiB, then read the answer (the service refuses it
                # from the header, without reading the rest)
                try:
                    s.sendall(body if body is not None else b" " * (64 << 10))
                except OSError:  # refused before the rest was sent: read the answer
                    pass
                raw = b""
                try:
                    while chunk := s.recv(65536):
                        raw += chunk
                except ConnectionResetError:
                    pass
                status = int(raw.split(b" ", 2)[1])
                detail = json.loads(raw.split(b"\r\n\r\n", 1)[1] or b"{}").get("detail", "")
        except (OSError, ValueError, IndexError, threading.BrokenBarrierError) as e:
            detail = f"{type(e).__name__}: {e}"
        with lock:
            results.append((kind, status, detail))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:  # a client could not connect: reported per request
        pass
    t = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    good_status, _ = request(conn, "POST", "/recommend", good)
    good_ms = (time.perf_counter() - t) * 1e3
    conn.close()
    for th in threads:
        th.join()
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status, _ in results:
        by_kind.setdefault(kind, {})
        by_kind[kind][str(status)] = by_kind[kind].get(str(status), 0) + 1
    return {
        "bad_requests": n,
        "all_4xx_with_detail": all(400 <= s < 500 and d for _, s, d in results),
        "statuses": by_kind,
        "good_query_during_them": {"status": good_status, "ms": round(good_ms, 1)},
    }


def _define(fv: flags.FlagValues) -> None:
    def i(name: str, default: int, help: str) -> None:
        flags.DEFINE_integer(name, default, help, flag_values=fv)

    flags.DEFINE_string("bundle", None, "Start the service on this bundle.", flag_values=fv)
    flags.DEFINE_string("url", None, "Or target a running one (loopback only).", flag_values=fv)
    i("clients", 8, "Concurrent keep-alive clients (1..256).")
    i("requests", 400, "At most this many requests (1..100000).")
    flags.DEFINE_float("duration", 60.0, "At most this many seconds (<= 600).", flag_values=fv)
    i("warmup", 5, "Warm-up requests before the load.")
    i("top_k", 10, "top_k of every query.")
    flags.DEFINE_string("pool", "all", "pool of every query.", flag_values=fv)
    flags.DEFINE_string("dataset_desc", None, "One new-dataset query instead.", flag_values=fv)
    flags.DEFINE_string("task", None, "Its task (with --dataset_desc).", flag_values=fv)
    i("bad", 100, "Concurrent bad requests afterwards (0: none).")


def _run(fv: flags.FlagValues) -> None:
    """Starts (or targets) the service, loads it, prints the JSON report."""
    if not (fv.bundle or fv.url) or (fv.bundle and fv.url):
        raise cli.UsageError("give --bundle (start a service) or --url (a running one)")
    if not (1 <= fv.clients <= 256 and 1 <= fv.requests <= 100_000 and fv.duration <= 600):
        raise cli.UsageError(
            "bounds: 1 <= --clients <= 256, 1 <= --requests <= 100000, --duration <= 600"
        )
    proc = None
    try:
        if fv.url:
            host, port = loopback(fv.url)
        else:
            host, port = "127.0.0.1", free_port()
            cmd = [sys.executable, "-m", "modellens_jax.serve_http", f"--bundle={fv.bundle}",
                   f"--port={port}", "--atlas=off", "--noaccess_log"]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t_start = time.perf_counter()
        health = wait_healthy(host, port, 300, proc)
        start_s = time.perf_counter() - t_start
        conn = http.client.HTTPConnection(host, port, timeout=60)
        _, vb = request(conn, "GET", "/vocab")
        vocab = json.loads(vb)
        if fv.dataset_desc:
            queries = [{"dataset_desc": fv.dataset_desc, "task": fv.task}]
        else:
            queries = [
                {"dataset": d, "task": t}
                for d, t in zip(vocab["datasets"], vocab["dataset_tasks"])
                if t is not None
            ]
        bodies = [json.dumps({**q, "pool": fv.pool, "top_k": fv.top_k}).encode() for q in queries]
        status, first = request(conn, "POST", "/recommend", bodies[0])
        if status != 200:
            raise RuntimeError(f"the first query failed: {status} {first[:300]!r}")
        t = time.perf_counter()
        for b in bodies[1 : 1 + fv.warmup]:
            request(conn, "POST", "/recommend", b)
        warm_s = time.perf_counter() - t
        conn.close()
        load0 = os.getloadavg()[0]
        report = {
            "target": f"http://{host}:{port}/recommend",
            "bundle": health.get("bundle"),
            "fingerprint": health.get("fingerprint"),
            "pool": fv.pool,
            "pool_models": health.get("models") if fv.pool == "all" else None,
            "top_k": fv.top_k,
            "distinct_queries": len(bodies),
            "service_start_to_healthy_s": round(start_s, 2) if proc else None,
            "warmup_s": round(warm_s, 2),
            "host_cpus": os.cpu_count(),
            "load_average_1m_before": round(load0, 2),
            "load": run_load(
                host,
                port,
                bodies,
                clients=fv.clients,
                requests=fv.requests,
                duration=fv.duration,
            ),
        }
        if fv.bad:
            report["bad"] = bad_requests(host, port, fv.bad, bodies[0])
            report["healthz_after"] = wait_healthy(host, port, 30, proc)["status"]
        report["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    except (RuntimeError, ValueError, OSError) as e:
        err = proc.stderr.read().decode(errors="replace")[-2000:] if proc and proc.poll() else ""
        raise cli.UsageError(f"{e}{(': ' + err.strip()) if err else ''}") from e
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(report, indent=1))


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
