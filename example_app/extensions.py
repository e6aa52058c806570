"""The extensions, created once and bound to the app in :func:`create_app`."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_plainqueue import PlainQueue


class Base(DeclarativeBase):
    """The declarative base behind ``db.Model``; models subclass it directly so
    type checkers see their columns."""


db = SQLAlchemy(model_class=Base)
queue = PlainQueue(db=db)
