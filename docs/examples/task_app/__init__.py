from __future__ import annotations

from flask import Flask
from flask import render_template
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI="sqlite:///task_app.sqlite",
        PLAINQUEUE_TASKS=["task_app.tasks"],
    )
    app.config.from_prefixed_env()
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()

    @app.route("/")
    def index() -> str:
        return render_template("index.html")

    from . import views

    app.register_blueprint(views.bp)
    return app
