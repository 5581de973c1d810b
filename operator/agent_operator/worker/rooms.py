"""Whether a LiveKit room is still there (RoomService ListRooms).

Used before a job is resumed after an operator restart: if the call ended meanwhile, its
room is gone, and an agent joining would only create an empty room anew (LiveKit creates a
room on join) and sit in it until LiveKit's empty timeout.
"""

from __future__ import annotations

import aiohttp
from livekit import api

TIMEOUT_SECONDS = 5.0


async def room_exists(url: str, api_key: str, api_secret: str, room: str) -> bool:
    """True if LiveKit lists the room; raises when LiveKit cannot be asked."""
    async with api.LiveKitAPI(
        url,
        api_key,
        api_secret,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        failover=False,
    ) as lk:
        found = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    return any(r.name == room for r in found.rooms)
