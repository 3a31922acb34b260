"""The HTTP service, its page and the atlas, over test_export's trained bundle: the API answers
what the CLI prints, bad requests get one 4xx line (also 100 at once), the atlas's top-K is the
recommender's, and headless Chromium drives the page and the atlas end to end."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra (fastapi, uvicorn)")
from fastapi.testclient import TestClient

from modellens_jax.serving import atlas, loadtest, recommend
from modellens_jax.serving import http as serve_http

# The fixtures `trained` and `bundle` (tests/trained_bundle.py, via conftest.py): the bundle of a
# 2-step run on the shipped corpus compiled with `tiny` (a copy of it under
# MODELLENS_TEST_BUNDLE_CACHE when the mutation runner sets that).
ARTIFACTS = Path(os.environ.get("MODELLENS_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module")
def service(bundle, tmp_path_factory) -> serve_http.Service:
    cache = tmp_path_factory.mktemp("atlas-cache")
    svc = serve_http.Service(bundle, atlas="background", atlas_method="pca", atlas_cache=cache)
    svc._atlas_thread.join(120)
    assert svc.atlas_status == "ready", svc.atlas_error
    return svc


@pytest.fixture(scope="module")
def client(service) -> TestClient:
    return TestClient(serve_http.create_app(service))


@pytest.fixture(scope="module")
def query(service) -> dict:
    """A task with a pool of several models, a metric, and a new dataset's name."""
    rec = service.rec
    v = rec.bundle.vocab
    t = max(range(1, len(v["tasks"])), key=lambda i: len(rec.task_models[i]))
    return {"task": v["tasks"][t], "metric": v["metrics"][1], "dataset": v["datasets"][0]}


def cli(args: list[str], tmp_path: Path) -> str:
    out = tmp_path / f"cli-{len(list(tmp_path.iterdir()))}.txt"
    assert recommend.main([*args, f"--out={out}"]) == 0
    return out.read_text().rstrip("\n")


def test_recommend_answers_what_the_cli_prints(bundle, client, query, tmp_path) -> None:
    b = f"--bundle={bundle}"
    q = [f"--task={query['task']}", f"--metric={query['metric']}", f"--dataset={query['dataset']}"]
    body = {**query, "top_k": 5}
    for fmt in recommend.FORMATS:
        r = client.post("/recommend", json={**body, "format": fmt})
        assert r.status_code == 200, r.text
        assert r.text == cli([b, *q, "--top_k=5", f"--format={fmt}"], tmp_path)
    doc = client.post("/recommend", json=body).json()  # json is the default format
    assert [x["rank"] for x in doc["results"]] == [1, 2, 3, 4, 5]
    assert {"prior", "residual", "score", "pool", "unknown"} <= set(doc["results"][0])
    # pools and filters as the CLI's flags
    r = client.post("/recommend", json={**body, "pool": "all", "top_k": 0, "max_params": 1.5,
                                        "families": "vit,resnet"})  # fmt: skip
    want = cli([b, *q, "--pool=all", "--top_k=0", "--max_params=1.5", "--families=vit,resnet",
                "--json"], tmp_path)  # fmt: skip
    assert r.text == want


def test_uploaded_candidates_rank_as_the_cli(bundle, client, query, service, tmp_path) -> None:
    v = service.rec.bundle.vocab
    text = (
        "model,family,params,model_desp\n"
        f"{v['models'][3]},,,\n"
        "acme/new-model-7b,acme,7,a new model\n"
        "acme/new-model-1b,acme,1,a new small model\n"
    )
    path = tmp_path / "models.csv"
    path.write_text(text)
    body = {"task": query["task"], "dataset": query["dataset"], "candidates_csv": text}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200, r.text
    want = cli([f"--bundle={bundle}", f"--task={query['task']}",
                f"--dataset={query['dataset']}", f"--candidates={path}", "--json"], tmp_path)  # fmt: skip
    assert r.json()["results"] == json.loads(want)["results"]
    assert len(service.pools) == 1  # featurised once, kept with its model side
    assert client.post("/recommend", json={**body, "top_k": 1}).status_code == 200
    assert len(service.pools) == 1
    bad = client.post("/recommend", json={**body, "candidates_csv": "model,params\nx,-3\n"})
    assert bad.status_code == 422
    assert bad.json() == {
        "detail": "candidates.csv row 1 (line 2), field 'params': negative parameter count -3 "
        "(billions)",
        "field": "candidates_csv",
    }


def test_bad_requests_get_one_line(bundle, client, query, capsys) -> None:
    def err(r, status: int) -> dict:
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"detail", "field"} and "\n" not in body["detail"]
        return body

    post = lambda content, **kw: client.post(  # noqa: E731
        "/recommend", content=content, headers={"Content-Type": "application/json", **kw}
    )
    assert err(post(b'{"task": '), 400)["detail"].startswith("body: malformed JSON (")
    assert err(post(b"[1, 2]"), 422)["detail"] == "body: expected a JSON object"
    assert err(post(b""), 422)["detail"] == "body: empty; expected a JSON object"
    unknown = err(client.post("/recommend", json={**query, "colour": "red"}), 422)
    assert unknown == {"detail": "colour: unknown field", "field": "colour"}
    typo = err(client.post("/recommend", json={**query, "top-k": 3}), 422)
    assert typo == {"detail": "top-k: unknown field (did you mean 'top_k'?)", "field": "top-k"}
    typed = err(client.post("/recommend", json={**query, "top_k": "many"}), 422)
    assert typed["field"] == "top_k" and typed["detail"].startswith("top_k: Input should be")
    too_big = err(post(b" " * (10 * 1000 * 1000)), 413)
    assert too_big["detail"] == "body: larger than 4,194,304 bytes (the service's --max_body_bytes)"
    chunked = client.post("/recommend", content=iter([b" " * (1 << 20)] * 6),
                          headers={"Content-Type": "application/json"})  # fmt: skip
    assert err(chunked, 413)["detail"] == too_big["detail"]
    form = client.post("/recommend", content=b"task=x", headers={"Content-Type": "text/plain"})
    assert err(form, 415)["detail"] == "Content-Type: text/plain; expected application/json"
    # the CLI's exit-2 messages, word for word, with the field they are about
    for field, value, flag in (
        ("task", "zz-unheard", "--task"),
        ("metric", "nope@10", "--metric"),
        ("top_k", -1, "--top_k"),
        ("min_params", -2, "--min_params"),
    ):
        r = err(client.post("/recommend", json={**query, "dataset_desc": "d", field: value}), 422)
        assert r["field"] == field
        argv = [f"--bundle={bundle}", "--dataset_desc=d", f"--task={query['task']}",
                f"--dataset={query['dataset']}", f"--metric={query['metric']}", f"{flag}={value}"]  # fmt: skip
        capsys.readouterr()
        assert recommend.main(argv) == 2
        assert capsys.readouterr().err.strip() == f"error: {r['detail']}"
    pool = err(client.post("/recommend", json={**query, "pool": "everything"}), 422)
    assert pool == {
        "detail": "--pool='everything': expected one of task, modality, all",
        "field": "pool",
    }  # fmt: skip (the CLI's flag parser refuses it before serving)
    assert err(client.get("/nope"), 404)["detail"] == "Not Found"


def test_score_vocab_health_openapi(client, service, query) -> None:
    v = service.rec.bundle.vocab
    pairs = [{"dataset": query["dataset"], "task": query["task"], "metric": query["metric"],
              "model": m} for m in v["models"][:3]]  # fmt: skip
    pairs.append({**pairs[0], "model": "acme/brand-new-3b"})
    r = client.post("/score", json={"pairs": pairs, "models": [
        {"model": "acme/brand-new-3b", "family": "acme", "params": 3}]})  # fmt: skip
    assert r.status_code == 200, r.text
    want = service.rec.score_pairs(pairs, models=[{"model": "acme/brand-new-3b",
                                                   "family": "acme", "params": 3}])  # fmt: skip
    assert r.json()["results"] == want
    miss = client.post("/score", json={"pairs": pairs})
    assert miss.status_code == 422 and miss.json()["field"] == "pairs"
    assert "'acme/brand-new-3b' is not in the bundle" in miss.json()["detail"]
    voc = client.get("/vocab").json()
    assert query["task"] in voc["tasks"] and len(voc["datasets"]) == len(voc["dataset_tasks"])
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["atlas"] == "ready"
    assert health["warm"] in (False, True)
    assert health["files_verified"] == len(service.rec.bundle.manifest["files"])
    spec = client.get("/openapi.json").json()
    assert {"/recommend", "/score", "/vocab", "/healthz", "/atlas"} <= set(spec["paths"])
    assert "RecommendRequest" in spec["components"]["schemas"]
    assert set(spec["paths"]["/recommend"]["post"]["responses"]["200"]["content"]) == {
        "application/json", "text/plain"}  # fmt: skip
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    assert "http" not in client.get("/static/atlas.js").text.replace("HTTP ", "")  # no CDN


def test_start_refuses_a_bad_bundle(tmp_path, capsys) -> None:
    assert serve_http.main([f"--bundle={tmp_path / 'none'}"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ")


# --- atlas ----------------------------------------------------------------------------------
def test_atlas_top_k_is_the_recommenders(service, tmp_path, monkeypatch) -> None:
    rec, doc = service.rec, service.atlas_doc
    v = rec.bundle.vocab
    n_m, n_d = len(v["models"]), len(v["datasets"])
    assert len(doc["models"]["learned"]) == n_m and len(doc["datasets"]["learned"]) == n_d
    assert np.abs(np.asarray(doc["models"]["learned"])).max() <= 1.0
    assert doc["semantic_available"] == bool(rec.model_desc_dim)
    with_top = [d for d in range(n_d) if doc["datasets"]["top"][d]]
    assert with_top
    for d in with_top[:: max(1, len(with_top) // 5)]:
        got = [v["models"][m] for m, _ in doc["datasets"]["top"][d]]
        want = [r.model for r in rec.rank(dataset=v["datasets"][d], top_k=doc["top_k"])]
        assert got == want
    # a model's best datasets: its rank within each dataset's task pool, best share first
    m = next(i for i, t in enumerate(doc["models"]["top"]) if len(t) >= 2)
    best = doc["models"]["top"][m]
    shares = [(r - 1) / max(n - 1, 1) for _, r, n in best]
    assert shares == sorted(shares)
    d0, r0, _ = best[0]
    ranked = [x.model for x in rec.rank(dataset=v["datasets"][d0], top_k=0)]
    assert ranked.index(v["models"][m]) + 1 == r0
    # cached by the bundle's fingerprint: a second load reads it
    monkeypatch.setattr(atlas, "compute_atlas", lambda *a, **k: pytest.fail("recomputed"))
    again = atlas.load_or_compute(rec, cache_dir=service.atlas_cache, method="pca")
    assert again == json.loads(json.dumps(doc))


def test_projection_is_deterministic() -> None:
    x = np.random.default_rng(0).normal(size=(60, 8))
    x[:30] += 4.0  # two clusters
    for method in atlas.METHODS:
        a, b = atlas.project(x, method), atlas.project(x, method)
        np.testing.assert_array_equal(a, b)
        assert a.shape == (60, 2) and np.abs(a).max() <= 1.0
        d = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.diag(np.full(60, np.inf))
        assert np.all((d.argmin(1) < 30) == (np.arange(60) < 30))  # neighbours stay together
    assert atlas.project(np.zeros((1, 3)), "tsne").shape == (1, 2)


def test_atlas_cli_exports(bundle, service, tmp_path, capsys) -> None:
    b, cache = f"--bundle={bundle}", f"--cache_dir={service.atlas_cache}"
    for name in ("atlas.png", "atlas.html", "atlas.json"):
        assert atlas.main([b, cache, "--method=pca", f"--out={tmp_path / name}"]) == 0
    assert (tmp_path / "atlas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "atlas.html").read_text()
    assert "window.ATLAS_DATA" in page and "<script src" not in page and "<link" not in page
    doc = atlas.read_atlas(tmp_path / "atlas.json", service.rec)
    assert doc["models"]["name"] == service.rec.bundle.vocab["models"]
    assert atlas.main([b, "--out=atlas.svg"]) == 2
    assert "expected a .png, .html, .json" in capsys.readouterr().err


# --- a real server: concurrent bad requests, the page in headless Chromium --------------------
@pytest.fixture(scope="module")
def server(service):
    """The app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(serve_http.create_app(service), log_level="warning")
    srv = uvicorn.Server(config)
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    loadtest.wait_healthy("127.0.0.1", port, 30, None)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)
    sock.close()


def test_keeps_serving_under_100_concurrent_bad_requests(server, query) -> None:
    port = int(server.rsplit(":", 1)[1])
    good = json.dumps({**query, "top_k": 3}).encode()
    report = loadtest.bad_requests("127.0.0.1", port, 100, good)
    assert report["all_4xx_with_detail"], report
    assert report["statuses"]["body_10MB"] == {"413": 25}
    assert report["statuses"]["malformed_json"] == {"400": 25}
    assert report["good_query_during_them"]["status"] == 200
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert loadtest.request(conn, "POST", "/recommend", good)[0] == 200


def _chrome(downloads: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1500,1000", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    try:
        return webdriver.Chrome(options=opts, service=DriverService(driver))
    except Exception as e:  # a browser that cannot start here (no display libraries, ...)
        pytest.skip(f"headless Chromium did not start: {type(e).__name__}: {e}"[:300])


def test_page_and_atlas_in_headless_chromium(server, bundle, service, query, tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    desc = "Photographs of 200 bird species, fine-grained classification."
    argv = [f"--bundle={bundle}", f"--task={query['task']}", f"--metric={query['metric']}",
            f"--dataset={query['dataset']}", f"--dataset_desc={desc}"]  # fmt: skip
    want = json.loads(cli([*argv, "--json"], tmp_path))["results"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    drv = _chrome(downloads)
    wait = WebDriverWait(drv, 60)
    try:
        drv.get(server + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        for field, value in (("dataset_desc", desc), ("task", query["task"]),
                             ("metric", query["metric"]), ("dataset", query["dataset"])):  # fmt: skip
            drv.find_element(By.ID, field).send_keys(value)
        drv.find_element(By.ID, "rank").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tbody tr"))
        rows = drv.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert len(rows) == len(want)
        first = rows[0].find_elements(By.TAG_NAME, "td")
        assert first[1].text == want[0]["model"]
        assert first[2].text == f"{want[0]['score']:.4f}"
        assert drv.find_element(By.ID, "error").text == ""
        drv.save_screenshot(str(ARTIFACTS / "page.png"))
        # the router pool, downloaded: what the CLI writes with --format=routellm
        drv.find_element(By.CSS_SELECTOR, "button.dl[data-format='routellm']").click()
        got = downloads / "routellm_config.json"
        wait.until(lambda d: got.is_file() and got.stat().st_size)
        assert got.read_text().rstrip("\n") == cli(
            [*argv, "--format=routellm", "--top_k=10"], tmp_path
        )
        # an uploaded candidate file ranks as the CLI's --candidates
        models = tmp_path / "candidates.csv"
        models.write_text("model,family,params\nacme/new-9b,acme,9\n" + "".join(
            f"{r['model']},,\n" for r in want[:3]))  # fmt: skip
        drv.find_element(By.CSS_SELECTOR, "details.filters summary").click()
        drv.find_element(By.ID, "candidates_file").send_keys(str(models))
        wait.until(lambda d: d.find_element(By.ID, "candidates_info").text)
        drv.find_element(By.ID, "rank").click()
        cand = json.loads(cli([*argv, f"--candidates={models}", "--json"], tmp_path))["results"]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == 4)
        cells = drv.find_elements(By.CSS_SELECTOR, "#results tbody td.model")
        assert [c.text for c in cells] == [r["model"] for r in cand]
        drv.find_element(By.ID, "candidates_clear").click()
        # results that carry a confidence (a future ensemble bundle) get a column for it
        heads = lambda: [h.text for h in drv.find_elements(By.CSS_SELECTOR, "#results th")]  # noqa: E731
        assert "confidence" not in heads()
        drv.execute_script(
            "ModelLensPage.render({results: arguments[0].map((r) => ({...r, confidence: 0.9}))})",
            want,
        )
        assert heads()[3] == "confidence"
        assert drv.find_elements(By.CSS_SELECTOR, "#results tbody td")[3].text == "0.900"
        # an unknown task: the service's one line, shown as is
        drv.find_element(By.ID, "task").clear()
        drv.find_element(By.ID, "task").send_keys("zz-unheard")
        drv.find_element(By.ID, "rank").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "--task='zz-unheard': not in this bundle" in drv.find_element(By.ID, "error").text

        # the atlas: search a model, click it, see its best datasets
        drv.find_element(By.ID, "nav-atlas").click()
        wait.until(lambda d: d.find_element(By.ID, "atlas").get_attribute("data-ready"))
        target = want[0]["model"]
        search = drv.find_element(By.ID, "atlas-search")
        search.send_keys(target, Keys.ENTER)
        canvas = drv.find_element(By.CSS_SELECTOR, "canvas[data-space='learned']")
        pos = drv.execute_script(
            "return ModelLensAtlas.current.screenPosition('learned', arguments[0])", target
        )
        assert pos is not None
        size = canvas.size  # offsets are from the element's centre in Selenium 4
        ActionChains(drv).move_to_element_with_offset(
            canvas, int(pos["x"] - size["width"] / 2), int(pos["y"] - size["height"] / 2)
        ).click().perform()
        wait.until(lambda d: d.find_element(By.ID, "atlas").get_attribute("data-selected"))
        assert drv.find_element(By.ID, "atlas").get_attribute("data-selected") == target
        items = drv.find_elements(By.CSS_SELECTOR, "#atlas-topk li")
        m = service.rec.model_index[target]
        best = service.atlas_doc["models"]["top"][m]
        assert len(items) == len(best) > 0
        first_ds = service.rec.bundle.vocab["datasets"][best[0][0]]
        assert items[0].text.startswith(first_ds)
        drv.save_screenshot(str(ARTIFACTS / "atlas.png"))
        logs = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert not [
            e for e in logs if "zz-unheard" not in e["message"] and "422" not in e["message"]
        ]
    finally:
        drv.quit()


def test_loadtest_command_prints_json(server, capsys) -> None:
    assert loadtest.main([f"--url={server}", "--clients=2", "--requests=12", "--bad=8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["load"]["ok"] == 12 and report["load"]["latency_ms"]["p99"] > 0
    assert report["pool"] == "all" and report["pool_models"] > 0
    assert report["bad"]["all_4xx_with_detail"] and report["healthz_after"] == "ok"
    with pytest.raises(ValueError, match="only loopback"):
        loadtest.loopback("http://10.0.0.1:8000")


def test_lazy_atlas_answers_202_then_the_document(bundle, service) -> None:
    lazy = serve_http.Service(bundle, atlas="lazy", atlas_method="pca",
                              atlas_cache=service.atlas_cache, warmup=False)  # fmt: skip
    client = TestClient(serve_http.create_app(lazy))
    assert client.get("/healthz").json()["atlas"] == "not started"
    first = client.get("/atlas")
    assert first.status_code == 202 and first.json()["detail"].startswith("atlas: being computed")
    lazy._atlas_thread.join(60)
    doc = client.get("/atlas").json()
    assert doc["bundle"] == service.atlas_doc["bundle"] and doc["method"] == "pca"
    off = serve_http.Service(bundle, atlas="off", warmup=False)
    assert TestClient(serve_http.create_app(off)).get("/atlas").status_code == 404
