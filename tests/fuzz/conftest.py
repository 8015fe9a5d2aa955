"""The fuzz suite: property-based tests (Hypothesis) against `palyrad` as a real process over
loopback, every route, with hostile input from the client and from a fake upstream.

What must hold for every request (see `harness.py`):

- never a 500; no 5xx the client caused: 502/504 only when the upstream is at fault, 503 only
  for "every candidate cooling down" (or an upstream that said 503/529 itself, or a
  credential check that could not reach the provider);
- an answer within `PALYRA_FUZZ_TIMEOUT_S`; for heavy requests, `GET /healthz` answers within
  1.5 s while they are in flight (one request must not stall every other client);
- a streamed 200 ends cleanly (`data: [DONE]`, or the error event that stopped it);
- afterwards `GET /healthz` answers 200 and the log lines the request caused hold no
  traceback, no `unhandled_error`, no `exception` field and no line that is not JSON.

Every failure is raised as a `DaemonFailure_<exception>_at_<file>_<line>` (or named after
the broken property), so Hypothesis reports each distinct defect of a test apart.

Knobs (environment variables):

- `PALYRA_FUZZ_EXAMPLES` (default 15): examples per test, scaled per test by its cost
  (cheap tests run a few times more, heavy ones fewer). The default keeps the suite under a
  minute on the 2-core CI machine (~40 s when the daemon passes); for a longer local
  exploration, try
  `PALYRA_FUZZ_EXAMPLES=500 PALYRA_FUZZ_SEED=random .venv/bin/python -m pytest tests/fuzz`.
- `PALYRA_FUZZ_SEED` (default unset): unset, generation is derandomized (the same examples
  every run: CI is reproducible); an integer seeds it; `random` explores afresh each run
  (a failure then prints the `@reproduce_failure` blob to replay it).
- `PALYRA_FUZZ_TIMEOUT_S` (default 10): how long one answer may take.
- `PALYRA_FUZZ_PACKAGE_ROOT` (default unset): a directory with another `palyra` package for
  the daemon to import instead (e.g. `git archive <old commit> palyra | tar -x -C /tmp/old`),
  to check that the suite finds defects that have since been fixed.
- `PALYRA_FUZZ_EXPLICIT` (default 1): 0 leaves out the pinned `@example`s (the known defects,
  kept as regression anchors) so that only generated examples run: how to check that the
  strategies themselves still find what the examples pin.

The daemon runs once for the session (start-up costs ~2.5 s) with its own state dir under
pytest's tmp dir; after a failed test (or if it died) the next test starts a fresh one. Its log is
`<tmp>/fuzz/palyrad.log`. Admin token: `harness.ADMIN_TOKEN`, passed as PALYRA_ADMIN_TOKEN.

A failure's message is the reproduction: method, target, every header and the body (long
runs folded as `b'[' * 3000`, which is valid Python), what the upstream answered when it
matters, and the daemon's traceback or offending log line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, seed, settings

from tests.fuzz.harness import DaemonProcess, FakeUpstream, Fuzz

EXAMPLES = max(1, int(os.environ.get("PALYRA_FUZZ_EXAMPLES", "15")))
SEED = os.environ.get("PALYRA_FUZZ_SEED", "").strip()
EXPLICIT = os.environ.get("PALYRA_FUZZ_EXPLICIT", "1").strip() != "0"
PHASES = [p for p in Phase if p is not Phase.explain and (EXPLICIT or p is not Phase.explicit)]

F = TypeVar("F", bound=Callable[..., Any])


def fuzz_settings(scale: float = 1.0, shrink: bool = True) -> Callable[[F], F]:
    """Hypothesis settings for one fuzz test: `scale` x PALYRA_FUZZ_EXAMPLES examples.
    `shrink=False` for tests whose every example takes seconds: their pools are small and
    already minimal, and replaying them to shrink would cost minutes."""
    phases = [p for p in PHASES if shrink or p is not Phase.shrink]

    def decorate(test: F) -> F:
        configured = settings(
            max_examples=max(1, round(EXAMPLES * scale)),
            deadline=None,
            derandomize=SEED == "",
            database=None,
            print_blob=True,
            phases=phases,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.filter_too_much,
                HealthCheck.large_base_example,
                HealthCheck.function_scoped_fixture,
            ],
        )(test)
        if SEED and SEED != "random":
            configured = seed(int(SEED))(configured)
        return configured

    return decorate


@pytest.fixture(scope="session")
def fuzz_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def fuzz_daemon(
    tmp_path_factory: pytest.TempPathFactory, fuzz_upstream: FakeUpstream
) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(tmp_path_factory.mktemp("fuzz"), fuzz_upstream)
    daemon.start()
    yield daemon
    daemon.stop()


_failed: list[str] = []  # fuzz tests that failed since the daemon last started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed and "fz" in getattr(item, "fixturenames", ()):
        _failed.append(item.nodeid)
    return report


@pytest.fixture
def fz(fuzz_daemon: DaemonProcess, fuzz_upstream: FakeUpstream) -> Fuzz:
    if _failed or not fuzz_daemon.alive():
        # An earlier test failed (or killed it): whatever state it left behind, this one
        # starts from a fresh daemon and an empty state dir, so failures do not cascade.
        fuzz_daemon.stop()
        fuzz_daemon.start()
        _failed.clear()
    fuzz_upstream.replies.clear()
    fuzz_daemon.read_log()
    return Fuzz(fuzz_daemon, fuzz_upstream)
