"""Console API for cron jobs.

- `GET|POST /console/v1/cron/jobs`
- `GET|PATCH|DELETE /console/v1/cron/jobs/{job_id}` (GET adds the next five fire times)
- `POST /console/v1/cron/jobs/{job_id}/trigger`: run now as a `manual` run
- `GET /console/v1/cron/jobs/{job_id}/runs?limit=N`: history, newest first (N: 1-1000)

Validation errors are 400s whose `param` is the dotted field (`schedule.cron`), so a form can
show the message beside the field. A job whose stored schedule an older version let through
and this one cannot use is still listed, shown and deletable: its `problem` says why.
"""

from __future__ import annotations

from aiohttp import web

from palyra.cron.jobs import job_view
from palyra.cron.service import CronService
from palyra.cron.store import run_view
from palyra.server.keys import RUNTIME
from palyra.server.runs_routes import json_response, path_id, query_int, read_object

MAX_RUNS_LIMIT = 1000


def _cron(request: web.Request) -> CronService:
    return request.app[RUNTIME].cron


def _job_id(request: web.Request) -> str:
    return path_id(request, "job_id", "cron job")


async def list_jobs(request: web.Request) -> web.Response:
    jobs = await _cron(request).list_jobs()
    return json_response({"jobs": [job_view(job) for job in jobs]})


async def create_job(request: web.Request) -> web.Response:
    service = _cron(request)
    job = await service.create(await read_object(request))
    return json_response(job_view(job, service.upcoming(job)), status=201)


async def get_job(request: web.Request) -> web.Response:
    service = _cron(request)
    job = await service.get(_job_id(request))
    return json_response(job_view(job, service.upcoming(job)))


async def patch_job(request: web.Request) -> web.Response:
    service = _cron(request)
    job = await service.update(_job_id(request), await read_object(request))
    return json_response(job_view(job, service.upcoming(job)))


async def delete_job(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    await _cron(request).delete(job_id)
    return json_response({"job_id": job_id, "deleted": True})


async def trigger_job(request: web.Request) -> web.Response:
    result = await _cron(request).trigger(_job_id(request))
    if result.started is not None:
        return json_response({"outcome": "started", "run": run_view(result.started)}, 202)
    if result.skipped is not None:
        return json_response({"outcome": "skipped", "run": run_view(result.skipped)}, 200)
    return json_response({"outcome": "queued", "run": None}, 202)


async def job_runs(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", default=50, minimum=1, maximum=MAX_RUNS_LIMIT)
    rows = await _cron(request).runs(_job_id(request), limit)
    return json_response({"runs": [run_view(row) for row in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/v1/cron/jobs", list_jobs)
    app.router.add_post("/console/v1/cron/jobs", create_job)
    app.router.add_get("/console/v1/cron/jobs/{job_id}", get_job)
    app.router.add_patch("/console/v1/cron/jobs/{job_id}", patch_job)
    app.router.add_delete("/console/v1/cron/jobs/{job_id}", delete_job)
    app.router.add_post("/console/v1/cron/jobs/{job_id}/trigger", trigger_job)
    app.router.add_get("/console/v1/cron/jobs/{job_id}/runs", job_runs)
