"""Device acceptance tests for one bundle: ``pytest device_tests --bundle PATH [--backends ...] [--report OUT]``.

Runs on the device itself (a Raspberry Pi, a phone's Termux, a laptop) with only the base install: numpy,
Pillow, tokenizers, onnxruntime, optionally ai-edge-litert or tflite-runtime. No torch, no training code.
Every graph is tested on every selected backend that runs its format; a backend that is not installed
skips with the pip command that installs it. Without --bundle, everything skips with how to run it.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pytest

ALL_BACKENDS = ("onnxruntime", "litert", "tflite")
NO_BUNDLE = "no bundle given: run `pytest device_tests --bundle PATH` (a bundle folder or .zip)"


def pytest_addoption(parser):
    group = parser.getgroup("lugha", "lugha device tests")
    group.addoption("--bundle", default=None, help="bundle folder (or .zip) to test")
    group.addoption("--backends", default=",".join(ALL_BACKENDS),
                    help=f"comma-separated backends to test (default {','.join(ALL_BACKENDS)}; "
                         "those not installed skip)")
    group.addoption("--report", default=None, help="write parity, latency and memory results as JSON here")
    group.addoption("--threads", type=int, default=None, help="threads per engine (default: the engine's)")
    group.addoption("--repeats", type=int, default=20, help="timed runs per graph in test_latency (default 20)")


def _bundle_root(config) -> Path | None:
    """The bundle folder (a .zip is extracted once per session)."""
    given = config.getoption("bundle")
    if not given:
        return None
    cache = getattr(config, "_lugha_bundle_root", None)
    if cache is None:
        path = Path(given)
        if path.is_file() and path.suffix == ".zip":
            from lugha.runtimes.bundle import extract_bundle

            config._lugha_tmp, cache = extract_bundle(path)
        else:
            from lugha.manifest import bundle_root

            cache = bundle_root(path)
        config._lugha_bundle_root = cache
    return cache


def _manifest(config):
    from lugha.manifest import read_manifest_json

    if getattr(config, "_lugha_manifest", None) is None:
        config._lugha_manifest = read_manifest_json(_bundle_root(config))
    return config._lugha_manifest


def selected_backends(config) -> list[str]:
    return [b.strip() for b in config.getoption("backends").split(",") if b.strip()]


def _backend_param(backend: str, extra: str = "", *values, spec=None):
    """A parameter that skips, with the install command, when the backend's engine is absent (or with
    the reason, when the engine is known to run this graph wrong and the runtime refuses it)."""
    from lugha.runtimes.backends import BACKENDS, is_installed, not_installed_reason, unsupported_reason

    ident = f"{backend}-{extra}" if extra else backend
    if backend not in BACKENDS:
        return pytest.param(backend, *values, id=ident, marks=pytest.mark.skip(reason=f"unknown backend {backend!r}"))
    if not is_installed(backend):
        return pytest.param(backend, *values, id=ident, marks=pytest.mark.skip(reason=not_installed_reason(backend)))
    if spec is not None and (why := unsupported_reason(backend, spec)):
        return pytest.param(backend, *values, id=ident, marks=pytest.mark.skip(reason=f"refused by the runtime: {why}"))
    return pytest.param(backend, *values, id=ident)


def pytest_generate_tests(metafunc):
    """``backend`` x ``graph_key`` (every graph of the backend's format), or ``backend`` x ``precision``."""
    names = metafunc.fixturenames
    if "backend" not in names:
        return
    config = metafunc.config
    argnames = ["backend"] + [n for n in ("graph_key", "precision") if n in names]
    if _bundle_root(config) is None:
        metafunc.parametrize(argnames, [pytest.param(*([None] * len(argnames)), id="no-bundle",
                                                     marks=pytest.mark.skip(reason=NO_BUNDLE))])
        return
    from lugha.runtimes.backends import BACKENDS

    m = _manifest(config)
    params = []
    for backend in selected_backends(config):
        fmt = BACKENDS[backend].format if backend in BACKENDS else None
        if "graph_key" in names:
            params += [_backend_param(backend, g.key.replace("/", "-"), g.key, spec=g) for g in m.graphs
                       if g.format == fmt]
        elif "precision" in names:
            precisions = sorted({g.precision for g in m.graphs if g.format == fmt})
            params += [_backend_param(backend, p, p) for p in precisions]
    if not params:
        have = ", ".join(sorted({g.format for g in m.graphs}))
        params = [pytest.param(*([None] * len(argnames)), id="none",
                               marks=pytest.mark.skip(reason=f"no selected backend runs this bundle's formats ({have})"))]
    metafunc.parametrize(argnames, params)


@pytest.fixture(scope="session")
def bundle_dir(request) -> Path:
    root = _bundle_root(request.config)
    if root is None:
        pytest.skip(NO_BUNDLE)
    return root


@pytest.fixture(scope="session")
def manifest(request, bundle_dir):
    return _manifest(request.config)


@pytest.fixture(scope="session")
def threads(request) -> int | None:
    return request.config.getoption("threads")


@pytest.fixture(scope="session")
def report(request) -> dict:
    """Results collected by the tests; written to --report at the end of the session."""
    return request.config._lugha_report


def pytest_configure(config):
    config._lugha_report = {"parity": [], "latency": [], "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _engine_versions() -> dict:
    import importlib

    out = {}
    for module in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tokenizers", "PIL"):
        try:
            out[module] = getattr(importlib.import_module(module), "__version__", "?")
        except Exception:  # not installed, or broken: the parity tests say which
            out[module] = None
    return out


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    out = config.getoption("report")
    if out and _bundle_root(config) is not None:
        from lugha.runtimes.bench import peak_rss_mb

        rep = config._lugha_report
        m = _manifest(config)
        rep.update(bundle=str(config.getoption("bundle")), model=m.model.name, exitstatus=int(exitstatus),
                   machine={"platform": platform.platform(), "machine": platform.machine(),
                            "python": platform.python_version()},
                   engines=_engine_versions(), peak_rss_mb=peak_rss_mb())
        Path(out).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    tmp = getattr(config, "_lugha_tmp", None)
    if tmp is not None:
        tmp.cleanup()
