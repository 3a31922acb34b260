"""``python -m modellens_jax.serve_http --bundle=B [--host=127.0.0.1] [--port=8000]``

A JSON HTTP service over one bundle, with the recommendation page and the atlas.

Endpoints (the OpenAPI description is at ``/openapi.json``):

- ``POST /recommend``  the CLI's query (``dataset_desc, task, metric, dataset, pool, new_task,
  top_k, min_params, max_params, families``, an uploaded ``candidates_csv`` in the corpus's
  ``models.csv`` format) and formats (``format``: ``json`` (default), ``table``, ``routellm``,
  ``llmrouter``; ``router``): the body is exactly what ``python -m modellens_jax.recommend``
  prints for the same query.
- ``POST /score``  batch ``pairs`` (``dataset, task, metric, model``) with optional ``models``
  / ``datasets`` rows for unseen ones, as ``python -m modellens_jax.score``.
- ``GET /vocab``  tasks, metrics, datasets (with their task), families, modalities.
- ``GET /atlas``  the atlas document (``modellens_jax.atlas``); 202 while it is computed.
- ``GET /healthz``, ``GET /`` (the page), ``/static/*`` (its files; no CDN, works offline).

The bundle is verified once at start (a bad one stops the start with one line, exit 2); every
request is answered from memory through ``recommender.Recommender`` with the model side of each
task/modality pool (and of the last uploaded candidate pools) cached. Model calls run one at a
time in a worker thread, so the event loop keeps refusing bad requests while a query runs.

Errors are one line, ``{"detail": "...", "field": "..."}``: malformed JSON 400, a body over
``--max_body_bytes`` 413, a non-JSON content type 415, unknown fields, wrong types and the
CLI's input errors (unknown task, metric or dataset with the closest known names, bad CSV rows,
bad filters) 422 with the CLI's message.
"""

from __future__ import annotations

import collections
import difflib
import hashlib
import json
import logging
import re
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from absl import flags
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from modellens_jax import cli
from modellens_jax.serving import atlas as atlas_lib
from modellens_jax.serving import recommend
from modellens_jax.serving.bundle import BundleError
from modellens_jax.serving.recommender import POOLS, InputError, ModelPool, Recommender

log = logging.getLogger("modellens_jax.serving.http")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_BODY_BYTES = (
    4 << 20
)  # a 1M-character description (recommender.MAX_QUERY_TEXT) fits, 10 MB does not
CANDIDATE_POOLS = 16  # uploaded candidate CSVs kept featurised, with their model side
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


# --- request bodies -------------------------------------------------------------------------
class RecommendRequest(BaseModel):
    """The query of ``python -m modellens_jax.recommend``, flag for flag."""

    model_config = ConfigDict(extra="forbid")
    dataset_desc: str | None = Field(None, description="description of the dataset")
    task: str | None = Field(None, description="a task of the bundle (GET /vocab)")
    metric: str | None = Field(None, description="a metric of the bundle (GET /vocab)")
    dataset: str | None = Field(None, description="a dataset name (a known one uses its ID)")
    candidates_csv: str | None = Field(
        None, description="text of a models.csv (model, family, params, model_desp, "
        "release_date) to rank instead of the pool; unseen models use [UNK] IDs",
    )  # fmt: skip
    top_k: int = Field(10, description="how many results (0 = all)")
    min_params: float | None = Field(None, description="billions")
    max_params: float | None = Field(None, description="billions")
    families: list[str] | str | None = Field(None, description="family names (or a,b,c)")
    pool: str = Field("task", description=f"one of {', '.join(POOLS)}")
    new_task: bool = Field(False, description="accept a task the bundle has never seen")
    format: str = Field("json", description=f"one of {', '.join(recommend.FORMATS)}")
    router: str = Field("mf", description="RouteLLM router for format=routellm")


class Pair(BaseModel):
    """One (dataset, task, metric, model) row to score."""

    model_config = ConfigDict(extra="forbid")
    dataset: str
    task: str = ""
    metric: str = ""
    model: str


class ScoreRequest(BaseModel):
    """Pairs to score; ``models``/``datasets`` rows (corpus format) describe unseen ones."""

    model_config = ConfigDict(extra="forbid")
    pairs: list[Pair] = Field(..., min_length=1)
    models: list[dict[str, str | float | int | None]] | None = None
    datasets: list[dict[str, str | float | int | None]] | None = None


class ErrorBody(BaseModel):
    """Every error: one line, and the request field it is about (None: the whole body)."""

    detail: str
    field: str | None = None


# --- errors -----------------------------------------------------------------------------------
_FLAG = re.compile(r"^--([a-z][a-z_]*)")


def error_field(message: str) -> str | None:
    """The request field an InputError message is about: its leading ``--flag``,
    ``candidates_csv`` for the uploaded CSV, the list a ``pairs/models/datasets item``
    message names; None when it names none."""
    m = _FLAG.match(message)
    if m:
        return m.group(1)
    if message.startswith("candidates.csv") or message.startswith("candidates item"):
        return "candidates_csv"
    for name in ("pairs", "models", "datasets"):
        if message.startswith(f"{name} item"):
            return name
    if message.startswith("routellm"):
        return "format"
    return None


def error(status: int, detail: str, field: str | None = None) -> JSONResponse:
    """The one-line JSON error response."""
    return JSONResponse({"detail": detail, "field": field}, status_code=status)


def validation_line(exc: RequestValidationError) -> tuple[int, str, str | None]:
    """(status, one line, field) for the first of pydantic's errors."""
    errs = exc.errors()
    e = errs[0] if errs else {"type": "", "loc": ("body",), "msg": "invalid request"}
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    kind = e.get("type", "")
    if kind == "json_invalid":
        why = (e.get("ctx") or {}).get("error", "JSON decode error")
        return 400, f"body: malformed JSON ({why})", None
    if kind == "missing" and not loc:
        return 422, "body: empty; expected a JSON object", None
    if kind in ("model_attributes_type", "dict_type") and not loc:
        return 422, "body: expected a JSON object", None
    field = ".".join(loc) or None
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(loc[-1], _FIELDS, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return 422, f"{field}: unknown field{hint}", field
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return 422, f"{field}: {e.get('msg', 'invalid')}{more}", field


_FIELDS = sorted({*RecommendRequest.model_fields, *ScoreRequest.model_fields, *Pair.model_fields})


class BodyLimit:
    """ASGI middleware: a POST body over ``limit`` bytes is answered 413, from its Content-Length
    without reading it (a chunked one is read up to the limit); a POST that is not JSON: 415."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        too_big = error(
            413, f"body: larger than {self.limit:,} bytes (the service's --max_body_bytes)"
        )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await error(400, "Content-Length: not a number")(scope, receive, send)
            if n > self.limit:
                return await too_big(scope, receive, send)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            msg = f"Content-Type: {ctype.decode('latin-1') or 'none'}; expected application/json"
            return await error(415, msg)(scope, receive, send)
        if length is not None:
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): read it here, up to the limit, then replay it.
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


# --- the service ------------------------------------------------------------------------------
class Service:
    """One verified bundle in memory, its recommender (used by one request at a time) and the
    atlas, computed in a background thread by a second recommender over the same bundle."""

    def __init__(
        self,
        bundle: str | Path,
        *,
        atlas: Literal["background", "lazy", "off"] = "background",
        atlas_method: str = "tsne",
        atlas_top_k: int = 10,
        atlas_cache: str | Path | None = None,
        atlas_file: str | Path | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        warmup: bool = True,
    ):
        t0 = time.perf_counter()
        self.rec = Recommender.load(bundle)  # verifies every file's sha256, once
        self.load_seconds = time.perf_counter() - t0
        self.bundle_path = Path(bundle)
        self.max_body_bytes = int(max_body_bytes)
        self.lock = threading.Lock()
        self.pools: collections.OrderedDict[str, ModelPool] = collections.OrderedDict()
        self.atlas_mode, self.atlas_method, self.atlas_top_k = atlas, atlas_method, atlas_top_k
        self.atlas_cache = atlas_cache
        self.atlas_doc: dict[str, Any] | None = None
        self.atlas_bytes: bytes | None = None
        self.atlas_error: str | None = None
        self._atlas_thread: threading.Thread | None = None
        self._atlas_lock = threading.Lock()
        if atlas_file is not None:
            self._set_atlas(atlas_lib.read_atlas(atlas_file, self.rec))
        elif atlas == "background":
            self.start_atlas()
        v = self.rec.bundle.vocab
        self.vocab = {
            "tasks": v["tasks"][1:],
            "metrics": v["metrics"][1:],
            "datasets": list(v["datasets"]),
            "dataset_tasks": [v["tasks"][int(t)] if t else None for t in self.rec.dataset_task],
            "families": v["families"][1:],
            "modalities": v.get("modalities", [])[1:],
            "pools": list(POOLS),
            "formats": list(recommend.FORMATS),
            "models": len(v["models"]),
            "features": self.rec.features,
            "max_body_bytes": self.max_body_bytes,
        }
        self.warm: bool | None = None  # None: no warm-up; False: warming up; True: done
        self.warm_note = ""
        if warmup:
            self.warm = False
            threading.Thread(target=self.warm_up, name="warm-up", daemon=True).start()

    def warm_up(self) -> None:
        """Compiles the common query shapes and loads the text encoder (when the bundle embeds
        new descriptions) before the first request needs them; holds the model lock, so
        queries arriving meanwhile wait instead of compiling alongside."""
        t0 = time.perf_counter()
        v, notes = self.rec.bundle.vocab, []
        known = [(d, t) for d, t in zip(v["datasets"], self.vocab["dataset_tasks"]) if t]
        with self.lock:
            try:
                if known:
                    for pool in ("task", "all"):
                        self.rec.rank(dataset=known[0][0], task=known[0][1], pool=pool)
                if known and self.rec.features.get("dataset_desc"):
                    try:
                        self.rec.rank("warm-up description", known[0][1])
                    except BundleError as e:  # served, but new descriptions get 503
                        notes.append(f"new descriptions cannot be embedded here: {e}")
                        log.warning("warm-up: %s", notes[-1])
            except Exception as e:  # never stops the service; the request will say what is wrong
                notes.append(f"{type(e).__name__}: {e}")
                log.exception("warm-up failed")
        self.warm_note = "; ".join(notes) or f"done in {time.perf_counter() - t0:.1f} s"
        self.warm = True

    # atlas ------------------------------------------------------------------------------------
    def _set_atlas(self, doc: dict[str, Any]) -> None:
        self.atlas_bytes = json.dumps(doc, separators=(",", ":")).encode()
        self.atlas_doc = doc

    def start_atlas(self) -> None:
        """Starts computing (or reading the cached) atlas in a daemon thread, once."""
        with self._atlas_lock:
            if self._atlas_thread is not None or self.atlas_doc is not None:
                return
            self._atlas_thread = threading.Thread(
                target=self._compute_atlas, name="atlas", daemon=True
            )
            self._atlas_thread.start()

    def _compute_atlas(self) -> None:
        try:
            rec = Recommender(self.rec.bundle, self.rec._embedder)  # own caches, shared bundle
            self._set_atlas(
                atlas_lib.load_or_compute(
                    rec,
                    cache_dir=self.atlas_cache,
                    method=self.atlas_method,
                    top_k=self.atlas_top_k,
                    log=log.info,
                )
            )
        except Exception as e:  # reported by /atlas and /healthz, the service keeps serving
            log.exception("atlas failed")
            self.atlas_error = f"{type(e).__name__}: {e}"

    @property
    def atlas_status(self) -> str:
        if self.atlas_doc is not None:
            return "ready"
        if self.atlas_error:
            return "failed"
        if self._atlas_thread is not None:
            return "computing"
        return "off" if self.atlas_mode == "off" else "not started"

    # queries ----------------------------------------------------------------------------------
    def candidate_pool(self, text: str) -> ModelPool:
        """The uploaded models.csv featurised (strictly, by ``recommender.read_csv``), cached by its
        sha256 so re-ranking one upload reuses its model side."""
        key = hashlib.sha256(text.encode()).hexdigest()
        if key in self.pools:
            self.pools.move_to_end(key)
            return self.pools[key]
        with tempfile.TemporaryDirectory(prefix="modellens-upload-") as tmp:
            path = Path(tmp) / "candidates.csv"
            path.write_text(text, encoding="utf-8")
            try:
                pool = self.rec.candidates(path)
            except InputError as e:  # name the upload, not the temp directory
                raise InputError(str(e).replace(f"{tmp}/", "")) from None
        self.pools[key] = pool
        while len(self.pools) > CANDIDATE_POOLS:
            self.pools.popitem(last=False)
        return pool

    def recommend(self, q: RecommendRequest) -> tuple[str, str]:
        """(body, media type) of the CLI's output for the query."""
        if not (q.dataset_desc or q.dataset):
            raise InputError("--dataset_desc: give --dataset_desc (a new dataset) or --dataset "
                             "(a known one)")  # fmt: skip
        if q.format not in recommend.FORMATS:
            raise InputError(
                f"--format={q.format!r}: expected one of {', '.join(recommend.FORMATS)}"
            )
        families = q.families.split(",") if isinstance(q.families, str) else q.families
        query = {"dataset": q.dataset, "dataset_desc": q.dataset_desc, "task": q.task,
                 "metric": q.metric}  # fmt: skip
        with self.lock:
            candidates = self.candidate_pool(q.candidates_csv) if q.candidates_csv else None
            results = self.rec.rank(
                q.dataset_desc,
                q.task,
                q.metric,
                dataset=q.dataset,
                candidates=candidates,
                top_k=q.top_k,
                max_params=q.max_params,
                min_params=q.min_params,
                families=families,
                pool=q.pool,
                new_task=q.new_task,
            )
        text = recommend.render(results, query, q.format, q.router)
        return text, "text/plain; charset=utf-8" if q.format == "table" else "application/json"

    def score(self, q: ScoreRequest) -> list[dict[str, Any]]:
        """``Recommender.score_pairs`` over the request's rows."""
        with self.lock:
            return self.rec.score_pairs(
                [p.model_dump() for p in q.pairs], models=q.models, datasets=q.datasets
            )

    def health(self) -> dict[str, Any]:
        m = self.rec.bundle.manifest
        return {
            "status": "ok",
            "bundle": str(self.bundle_path),
            "fingerprint": atlas_lib.bundle_fingerprint(self.rec),
            "format_version": m.get("format_version"),
            "step": (m.get("source") or {}).get("step"),
            "files_verified": len(m.get("files", {})),
            "load_seconds": round(self.load_seconds, 3),
            "models": len(self.rec.model_index),
            "datasets": len(self.rec.dataset_index),
            "atlas": self.atlas_status,
            "warm": self.warm,
            "warm_up": self.warm_note,
        }


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over ``service`` (no Swagger/ReDoc pages: they load from a CDN;
    the OpenAPI document itself is at ``/openapi.json``)."""
    app = FastAPI(
        title="ModelLens recommender",
        version="1",
        description="Ranks pretrained models for a dataset from a verified modellens bundle.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    err = {"model": ErrorBody}

    @app.exception_handler(RequestValidationError)
    async def on_validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        status, line, field = validation_line(exc)
        return error(status, line, field)

    @app.exception_handler(InputError)
    async def on_input(_req: Request, exc: InputError) -> JSONResponse:
        return error(422, str(exc), error_field(str(exc)))

    @app.exception_handler(BundleError)
    async def on_bundle(_req: Request, exc: BundleError) -> JSONResponse:
        # e.g. the encoder a new description needs is not installed: the service's fault
        return error(503, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_other(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error(500, f"internal error ({type(exc).__name__}); see the service log")

    from starlette.concurrency import run_in_threadpool

    cli_output = {
        "description": "what `python -m modellens_jax.recommend` prints: JSON for format "
        "json (query + results), routellm (controller config) and llmrouter (llm_data); "
        "text for table",
        "content": {"application/json": {"schema": {"type": "object"}},
                    "text/plain": {"schema": {"type": "string"}}},
    }  # fmt: skip

    @app.post(
        "/recommend",
        responses={200: cli_output, 400: err, 413: err, 415: err, 422: err, 503: err},
    )
    async def post_recommend(q: RecommendRequest) -> Response:
        """Ranks the query's pool (or the uploaded candidates): the CLI's output, as JSON
        (``format`` json/routellm/llmrouter) or text (table)."""
        text, media = await run_in_threadpool(service.recommend, q)
        return Response(text, media_type=media)

    @app.post("/score", responses={400: err, 413: err, 415: err, 422: err})
    async def post_score(q: ScoreRequest) -> dict[str, Any]:
        """Scores every (dataset, task, metric, model) pair; results in input order."""
        return {"results": await run_in_threadpool(service.score, q)}

    @app.get("/vocab")
    async def get_vocab() -> dict[str, Any]:
        """Names for autocompletion: tasks, metrics, datasets (and each one's task),
        families, modalities; the pools and formats /recommend takes."""
        return service.vocab

    @app.get("/healthz")
    async def get_health() -> dict[str, Any]:
        """Liveness and what is served: bundle, fingerprint, step, counts, atlas status."""
        return service.health()

    @app.get("/atlas", responses={202: err, 404: err, 503: err})
    async def get_atlas() -> Response:
        """The atlas document (``modellens_jax.atlas``); 202 while it is being computed."""
        if service.atlas_bytes is not None:
            return Response(service.atlas_bytes, media_type="application/json")
        if service.atlas_error:
            return error(503, f"atlas: {service.atlas_error}")
        if service.atlas_mode == "off":
            return error(404, "atlas: off (the service was started with --atlas=off)")
        service.start_atlas()
        return error(202, "atlas: being computed; retry in a few seconds")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(GZipMiddleware, minimum_size=2048)
    app.add_middleware(BodyLimit, limit=service.max_body_bytes)
    return app


def _define(fv: flags.FlagValues) -> None:
    def s(name: str, default: str | None, help: str, **kw: Any) -> None:
        flags.DEFINE_string(name, default, help, flag_values=fv, **kw)

    s("bundle", None, "Bundle directory (from modellens_jax.export).", required=True)
    s("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    flags.DEFINE_integer("port", 8000, "TCP port.", flag_values=fv)
    flags.DEFINE_integer("max_body_bytes", MAX_BODY_BYTES, "Largest request body (bytes).",
                         lower_bound=1024, upper_bound=1 << 30, flag_values=fv)  # fmt: skip
    flags.DEFINE_enum("atlas", "background", ("background", "lazy", "off"), "Compute the atlas "
                      "at start (default), on first request, or never.", flag_values=fv)  # fmt: skip
    flags.DEFINE_enum("atlas_method", "tsne", atlas_lib.METHODS, "Atlas projection.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("atlas_top_k", 10, "Atlas counterparts kept per node.", flag_values=fv)
    s("atlas_cache", None, f"Atlas cache (default {atlas_lib.default_cache_dir()}).")
    s("atlas_file", None, "Serve this atlas (python -m modellens_jax.atlas --out=F.json).")
    flags.DEFINE_bool("access_log", True, "Log every request (--noaccess_log: do not).",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("warmup", True, "Compile the common shapes and load the encoder at start "
                      "(--nowarmup: do not).", flag_values=fv)  # fmt: skip


def _run(fv: flags.FlagValues) -> None:
    """Verifies the bundle, then serves it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = Service(
        fv.bundle, atlas=fv.atlas, atlas_method=fv.atlas_method, atlas_top_k=fv.atlas_top_k,
        atlas_cache=fv.atlas_cache, atlas_file=fv.atlas_file, max_body_bytes=fv.max_body_bytes,
        warmup=fv.warmup,
    )  # fmt: skip
    import uvicorn

    print(
        f"serving {fv.bundle} ({len(service.rec.model_index)} models; verified in "
        f"{service.load_seconds:.1f} s) on http://{fv.host}:{fv.port}/",
        file=sys.stderr,
    )
    uvicorn.run(create_app(service), host=fv.host, port=fv.port, access_log=fv.access_log,
                log_level="info")  # fmt: skip


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
