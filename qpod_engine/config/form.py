"""An environment as the TUI form shows it: one text per option (env_fields.FIELDS, in screen
order, after the name), read back with every problem at once."""

from __future__ import annotations

from typing import Any

from qpod_engine.base.errors import FieldError
from qpod_engine.config import environments as config
from qpod_engine.config.environments import Environment
from qpod_engine.config.fields import FIELDS, from_text, to_text

FORM_FIELDS: tuple[str, ...] = ("name", *(opt.key for opt in FIELDS))


def form_to_data(form: dict[str, str]) -> tuple[dict[str, Any], list[FieldError]]:
    """Form text -> the mapping an environment file holds, and the fields whose text cannot
    even be read (``NAME=VALUE`` lines, YAML). An absent field is left out (its default)."""
    data: dict[str, Any] = {}
    problems: list[FieldError] = []
    for opt in FIELDS:
        if opt.key not in form and not opt.required:
            continue
        value, why = from_text(opt, form.get(opt.key, ""))
        if why:
            problems.append(FieldError(opt.key, why))
        elif value is not None or opt.required:
            data[opt.key] = "" if value is None else value
    return data, problems


def check_form(form: dict[str, str]) -> tuple[Environment, list[FieldError]]:
    """The environment the form describes and every problem in it, in screen order, each
    naming its field (validated as an environment file is)."""
    name = form.get("name", "").strip()
    data, unreadable = form_to_data(form)
    env, problems = config.check_environment(name, data, "form")
    found = {p.field: p for p in unreadable}
    for err in problems:
        key = err.key if err.key in FORM_FIELDS else "image"
        found.setdefault(key, FieldError(key, err.detail))
    order = {k: i for i, k in enumerate(FORM_FIELDS)}
    return env, sorted(found.values(), key=lambda e: order[e.field])


def environment_to_form(env: Environment) -> dict[str, str]:
    """The inverse of ``form_to_data``, for editing."""
    return {"name": env.name, **{opt.key: to_text(opt, getattr(env, opt.key)) for opt in FIELDS}}
