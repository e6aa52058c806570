"""An app serving the queue's Prometheus metrics behind a bearer token, shown on
the operating page and run by ``tests/integration/test_metrics.py``."""

from __future__ import annotations

# [metrics]
import hmac
import typing as t

from flask import abort
from flask import Flask
from flask import request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


def create_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)
    queue.init_app(app)
    metrics = queue.metrics_view()

    @app.get("/metrics")
    def queue_metrics() -> ResponseReturnValue:
        expected = f"Bearer {app.config['METRICS_TOKEN']}"
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            abort(401)
        return metrics()

    return app


# [/metrics]
