"""What a job's runner subscribes to in its room, from the operator's ``auto_subscribe``."""

from __future__ import annotations

import dataclasses

from livekit import rtc

from agent_jobrunner.protocol import pb

__all__ = ["SubscribePolicy", "subscribe_policy"]


@dataclasses.dataclass(frozen=True)
class SubscribePolicy:
    # the SDK's own auto-subscribe (everything)
    auto_subscribe: bool
    # track kinds (rtc.TrackKind values) the runner subscribes to itself
    kinds: frozenset[int] = frozenset()

    def wants(self, kind: int) -> bool:
        return kind in self.kinds


def subscribe_policy(mode: pb.AutoSubscribe.ValueType) -> SubscribePolicy:
    """What to subscribe to for the operator's ``auto_subscribe`` (unspecified means all)."""
    if mode == pb.AUTO_SUBSCRIBE_NONE:
        return SubscribePolicy(auto_subscribe=False)
    if mode == pb.AUTO_SUBSCRIBE_AUDIO_ONLY:
        return SubscribePolicy(auto_subscribe=False, kinds=frozenset({rtc.TrackKind.KIND_AUDIO}))
    if mode == pb.AUTO_SUBSCRIBE_VIDEO_ONLY:
        return SubscribePolicy(auto_subscribe=False, kinds=frozenset({rtc.TrackKind.KIND_VIDEO}))
    return SubscribePolicy(auto_subscribe=True)
