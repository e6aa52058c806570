"""The ``prometheus`` extra: without ``prometheus_client`` the queue still
imports and works, and asking for metrics names the extra to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import create_test_app

from flask_plainqueue import ConfigurationError
from flask_plainqueue import PlainQueue


@pytest.fixture
def without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``import prometheus_client...`` fails, as when it is not installed."""
    for name in list(sys.modules):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            monkeypatch.delitem(sys.modules, name)
    # None in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "flask_plainqueue.metrics", raising=False)


@pytest.mark.usefixtures("without_prometheus_client")
@pytest.mark.parametrize("method", ["metrics_view", "metrics_registry"])
def test_missing_extra_names_it(method: str) -> None:
    queue = PlainQueue()
    with pytest.raises(ConfigurationError) as info:
        getattr(queue, method)()
    assert str(info.value) == (
        "Prometheus metrics need prometheus_client: pip install"
        " 'flask-plainqueue[prometheus]'."
    )
    assert isinstance(info.value.__cause__, ImportError)
    assert "flask_plainqueue.metrics" not in sys.modules


@pytest.mark.usefixtures("without_prometheus_client")
def test_the_core_never_imports_it(unopened_uri: str, tmp_path: Path) -> None:
    app, _, queue = create_test_app(unopened_uri, tmp_path / "instance")
    assert queue.settings(app) is not None
    assert "flask_plainqueue.metrics" not in sys.modules
