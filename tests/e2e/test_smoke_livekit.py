"""Smoke tests proving the LiveKit half of the test environment is real."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent, models

from devenv.livekit import LiveKitAccess

pytestmark = [pytest.mark.e2e, pytest.mark.smoke]


async def test_room_created_and_listed(livekit: LiveKitAccess) -> None:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=30))
        assert room.name == name
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))
        assert [r.name for r in listed.rooms] == [name]
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def test_bad_credentials_are_refused(livekit: LiveKitAccess) -> None:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, "x" * 40) as lk:
        with pytest.raises(api.TwirpError) as err:
            await lk.room.list_rooms(api.ListRoomsRequest())
        assert err.value.status == 401


async def test_worker_registers_and_receives_availability_request(livekit: LiveKitAccess) -> None:
    agent_name = f"smoke-agent-{uuid.uuid4().hex[:6]}"
    room = f"smoke-room-{uuid.uuid4().hex[:6]}"
    token = (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity("smoke-worker")
        .with_grants(api.VideoGrants(agent=True))
        .to_jwt()
    )
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{livekit.url}/agent?protocol=1", headers={"Authorization": f"Bearer {token}"}
        ) as ws,
    ):
        register = agent.WorkerMessage(
            register=agent.RegisterWorkerRequest(
                type=agent.JT_ROOM,
                agent_name=agent_name,
                version="smoke",
                allowed_permissions=models.ParticipantPermission(can_publish=True, can_subscribe=True),
            )
        )
        await ws.send_bytes(register.SerializeToString())
        first = await _next_server_message(ws)
        assert first.WhichOneof("message") == "register"
        assert first.register.worker_id

        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            dispatch = await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
            )
            assert dispatch.id

            msg = await _next_server_message(ws, want="availability")
            job = msg.availability.job
            assert job.room.name == room
            assert job.agent_name == agent_name
            assert job.dispatch_id == dispatch.id
            # decline, so the server does not wait on us
            await ws.send_bytes(
                agent.WorkerMessage(
                    availability=agent.AvailabilityResponse(job_id=job.id, available=False)
                ).SerializeToString()
            )
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_worker_without_agent_grant_is_refused(livekit: LiveKitAccess) -> None:
    token = (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity("not-an-agent")
        .with_grants(api.VideoGrants(room_join=True, room="x"))
        .to_jwt()
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"{livekit.url}/agent", headers={"Authorization": f"Bearer {token}"})
        assert err.value.status == 401


async def _next_server_message(
    ws: aiohttp.ClientWebSocketResponse, want: str | None = None, timeout: float = 30
) -> agent.ServerMessage:
    async def read() -> agent.ServerMessage:
        while True:
            frame = await ws.receive()
            if frame.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError(f"unexpected frame from livekit-server: {frame.type} {frame.data!r}")
            msg = agent.ServerMessage()
            msg.ParseFromString(frame.data)
            if want is None or msg.WhichOneof("message") == want:
                return msg

    return await asyncio.wait_for(read(), timeout)
