"""Names the operator makes: the agent participant's identity and name from the spec's
templates, and pod names. Templates are checked when the spec is parsed, so rendering an
offer's participant cannot fail on a template's syntax or an unknown field."""

from __future__ import annotations

import re
import string

from livekit.protocol import agent

FIELDS = ("agent_name", "deployment", "job_id", "room")
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


class TemplateError(ValueError):
    """The template cannot be rendered; the message is meant for a person."""


def check(template: str) -> None:
    """Raise TemplateError unless ``template`` uses only ``{field}`` of FIELDS (``{{``/``}}``
    for braces), with no format spec, conversion, index or attribute."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{template!r}: {exc} (a literal brace is written {{{{ or }}}})") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in FIELDS:
            raise TemplateError(f"{template!r}: unknown field {{{field}}} (known: {', '.join(FIELDS)})")
        if spec or conversion:
            raise TemplateError(f"{template!r}: {{{field}}} takes no format spec or conversion")


def render(template: str, job: agent.Job, deployment: str) -> str:
    """Fill a checked identity/name template with {job_id}, {room}, {agent_name}, {deployment}."""
    return template.format(
        job_id=job.id, room=job.room.name, agent_name=job.agent_name, deployment=deployment
    )


def pod_name(deployment: str, job_id: str, suffix: str) -> str:
    """A valid, readable pod name for a job: ``<deployment>-<job id>-<suffix>``."""
    job_part = _NOT_DNS.sub("-", job_id.lower())[-20:].strip("-") or "job"
    head = deployment[: 63 - len(job_part) - len(suffix) - 2].rstrip("-")
    return f"{head}-{job_part}-{suffix}"
