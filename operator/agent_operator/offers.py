"""What a deployment tells LiveKit and the runner about a job, as pure functions of the
spec and the job: the agent participant and the StartJobRequest, and what the job's pod
keeps of it."""

from __future__ import annotations

import logging

from livekit.protocol import agent

from agent_jobrunner.protocol import pb
from agent_operator import resume
from agent_operator.kube.podspec import JobInfo
from agent_operator.spec import AUTO_SUBSCRIBE, DeploymentSpec
from agent_operator.templates import render

log = logging.getLogger("agent_operator.deployment")

ATTRIBUTE_AGENT_NAME = "lk.agent.name"


def participant(spec: DeploymentSpec, job: agent.Job, deployment: str) -> tuple[str, str]:
    """The agent participant's identity and name (templates are checked at parse time)."""
    identity = render(spec.identity_template, job, deployment)
    name = render(spec.name_template, job, deployment) if spec.name_template else ""
    return identity, name


def attributes(spec: DeploymentSpec) -> dict[str, str]:
    return {ATTRIBUTE_AGENT_NAME: spec.agent_name, **spec.participant_attributes}


def accepted(spec: DeploymentSpec, job_id: str, identity: str, name: str) -> agent.AvailabilityResponse:
    """The answer to an offer this deployment takes: the agent participant it will join as."""
    return agent.AvailabilityResponse(
        job_id=job_id,
        available=True,
        participant_identity=identity,
        participant_name=name,
        participant_metadata=spec.participant_metadata,
        participant_attributes=attributes(spec),
    )


def start_request(
    assignment: agent.JobAssignment, spec: DeploymentSpec, identity: str, name: str
) -> pb.StartJobRequest:
    """The runner's StartJobRequest, with the participant LiveKit was told at the offer."""
    return pb.StartJobRequest(
        job=assignment.job.SerializeToString(),
        url=assignment.url or spec.livekit_url,
        token=assignment.token,
        participant_identity=identity,
        participant_name=name,
        participant_metadata=spec.participant_metadata,
        participant_attributes=attributes(spec),
        auto_subscribe=AUTO_SUBSCRIBE[spec.auto_subscribe],
    )


def job_info(request: pb.StartJobRequest, fields: dict[str, str]) -> JobInfo:
    """What the job's pod keeps of it (see ``resume``)."""
    job = agent.Job.FromString(request.job)
    kept = resume.encode(request)
    if not kept:
        log.warning(
            "job too big to keep on its pod: an operator restart before it starts loses it", extra=fields
        )
    return JobInfo(job.id, job.room.name, job.dispatch_id, kept)
