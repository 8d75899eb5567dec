"""The scenario-facing parameters shared by the streaming roles ``peer`` and ``source`` (their ``args``).

Defaults follow CoolStreaming/DONet where it gives one (1 s chunks, a 120-chunk buffer window and buffer map,
4 partners, periodic buffer maps and membership messages). The reference with every field is
docs/streaming-protocol.md ("Roles peer and source").
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes import wire


class HybridParams(BaseModel):
    """Chapter 4: this node's place in an ad-hoc network (``role`` main or local)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["main", "local"] = Field(description="main: Internet uplink + ad-hoc interface; local: ad-hoc only")
    scope: list[str] = Field(min_length=1, description="the ad-hoc network's subnets (CIDR): the only addresses a "
                                                      "local node talks to, a main node's ad-hoc side")
    local_tracker: str | None = Field(default=None, description="main: the local tracker of the ad-hoc network "
                                                                "(node name or address inside the scope)")
    local_port: int = Field(default=6969, ge=1, le=65535)
    local_user: str | None = Field(default=None, description="main: user at the local tracker")
    local_secret: str | None = None
    bind: str | None = Field(default=None, description="main: source address of connections on the ad-hoc side "
                                                       "(default: the kernel's choice by route)")
    local_partners: int = Field(default=4, ge=0, le=64,
                                description="main: partners to keep on the ad-hoc side (besides the other mains)")
    share: bool = Field(default=True, description="main: fetch from the Internet only this main's share of chunks")
    share_fallback: float | None = Field(default=2.0, ge=0,
                                         description="main: seconds before its deadline at which a chunk outside "
                                                     "the share is fetched from the Internet anyway; null = never")

    @model_validator(mode="after")
    def _check(self) -> HybridParams:
        for c in self.scope:
            ipaddress.IPv4Network(c, strict=False)
        if self.bind is not None:
            ipaddress.IPv4Address(self.bind)
        if self.role == "main" and not (self.local_tracker and self.local_user and self.local_secret):
            raise ValueError("hybrid role main needs local_tracker, local_user and local_secret")
        return self


class StreamParams(BaseModel):
    """Fields every streaming node has: tracker, identity, content, overlay maintenance, reporting."""

    model_config = ConfigDict(extra="forbid")
    tracker: str = Field(description="tracker node name or address (a local node: its local tracker)")
    tracker_port: int = Field(default=6969, ge=1, le=65535)
    user: str = Field(min_length=1, max_length=wire.MAX_NAME)
    secret: str = Field(min_length=1)
    content: int = Field(default=1, ge=1, le=wire.U32)
    key: str | None = Field(default=None, description="content key: the source signs chunks (HMAC-SHA256), peers "
                                                      "reject chunks without a valid signature; null = no checks")
    listen_port: int = Field(default=7000, ge=1, le=65535, description="partners, deputy and NAT-test requests")
    bind: str = Field(default="0.0.0.0", description="listen address; a specific address is also the source "
                                                     "address of outgoing connections")
    mode: Literal["live", "download"] = "live"
    window: int = Field(default=wire.DEFAULT_WINDOW, ge=1, le=wire.MAX_WINDOW,
                        description="live: chunks in the sliding buffer and in a buffer map")
    partners: int = Field(default=4, ge=0, le=64, description="partners the member scheduler keeps (outbound)")
    max_partners: int = Field(default=8, ge=0, le=256, description="partners accepted per overlay, inbound included")
    upload_capacity: int = Field(default=0, ge=0, le=wire.U32 * 1000, description="bit/s of upload this node says "
                                 "it has when it asks for a partnership (0: says nothing); the generated experiments "
                                 "set it from the access line")
    prefer_uploaders: float = Field(default=0.0, ge=0, description="when full, accept a partnership request from a "
                                    "node that says it uploads at least this many times more than the slowest "
                                    "partner that said so, and drop that one (0: never; the source in the generated "
                                    "experiments: 4)")
    min_members: int = Field(default=8, ge=0, le=wire.MAX_LIST, description="ask for more members below this")
    want_members: int = Field(default=20, ge=1, le=wire.MAX_LIST, description="members asked for in one request")
    ask_interval: float = Field(default=3.0, gt=0, description="least seconds between two requests for members "
                                                               "(to the tracker, to a partner)")
    bm_interval: float = Field(default=1.0, gt=0, description="seconds between buffer maps to each partner")
    bm_push: float = Field(default=0.0, ge=0, description="also send the buffer map when new chunks arrived, at "
                                                          "most this often (seconds; 0 = only every bm_interval)")
    membership_interval: float = Field(default=5.0, gt=0, description="seconds between MEMBERSHIP messages")
    member_idle: float = Field(default=30.0, gt=0, description="mCache idle timeout (listed members)")
    gossip_fanout: int = Field(default=2, ge=0, le=16, description="partners a new MEMBERSHIP is forwarded to")
    member_interval: float = Field(default=1.0, gt=0, description="period of the member scheduler")
    stale_after: float = Field(default=5.0, gt=0, description="drop a partner silent for this long (or without "
                                                              "buffer map for three times this long)")
    useless_after: float = Field(default=20.0, gt=0,
                                 description="drop a partner that exchanged no chunk either way for this long")
    slow_timeouts: int = Field(default=4, ge=1, description="drop a partner after this many request timeouts in a row")
    connect_timeout: float = Field(default=3.0, gt=0)
    retry_after: float = Field(default=5.0, gt=0, description="back-off before retrying a member that failed or "
                                                              "refused (grows with repeated failures)")
    ban_for: float = Field(default=300.0, gt=0, description="a partner that sent a corrupt chunk is not retried "
                                                            "for this long")
    idle_timeout: float = Field(default=15.0, gt=0, description="close a connection that is not a partnership "
                                                                "after this much silence")
    max_queue: int = Field(default=32, ge=1, description="chunk requests queued per partner before ERROR busy")
    serve_horizon: float = Field(default=0.0, ge=0, description="answer ERROR busy to a chunk request that would "
                                                                "wait longer than this behind the chunks already "
                                                                "queued for upload (live; 4x in download mode; "
                                                                "0 = never)")
    serve_old: float | None = Field(default=None, ge=0, description="live: serve_horizon never refuses a chunk "
                                                                    "made at least this many seconds ago (a viewer "
                                                                    "that far behind needs it soon); null = no "
                                                                    "exception")
    serve_urgent: float | None = Field(default=None, ge=0, description="serve_horizon never refuses a chunk "
                                                                       "request due within this many seconds "
                                                                       "(its due_ms: the requester plays it "
                                                                       "soon); null = no exception")
    queue_expiry: float | None = Field(default=None, gt=0, description="forget a queued chunk request that "
                                                                       "waited this many seconds without being "
                                                                       "served (its requester has timed out and "
                                                                       "asked elsewhere); null = never")
    serve_deadline: bool = Field(default=True, description="live: answer ERROR busy to a chunk request that "
                                                          "cannot reach the requester before the deadline it "
                                                          "gives (CHUNK_REQ due_ms; the wait is estimated from "
                                                          "the queued requests and the measured upload rate), "
                                                          "and drop a queued one once its chunk can no longer "
                                                          "arrive in time")
    serial_upload: bool = Field(default=False, description="serve the chunk requests of all partners one chunk "
                                                          "at a time, in the order the requests came, instead "
                                                          "of one chunk per connection at once (sharing the "
                                                          "uplink)")
    serial_overlap: float = Field(default=0.1, ge=0, description="serial_upload: the next chunk starts once "
                                                                 "the previous one has at most 16 KB, or this "
                                                                 "many seconds of the measured upload rate, left "
                                                                 "in its socket")
    serial_wait: float = Field(default=2.0, gt=0, description="serial_upload: longest wait for one chunk to leave "
                                                              "the socket before the next one is started")
    send_buffer: int = Field(default=32768, ge=0, description="SO_SNDBUF of partner connections (bytes; 0 = the "
                                                              "OS default): keeps buffer maps and requests from "
                                                              "queueing behind seconds of chunk data")
    max_bad_frames: int = Field(default=16, ge=1, description="rejected frames per connection before hanging up")
    max_bad_bytes: int = Field(default=262144, ge=1, description="rejected bytes per connection before hanging up")
    connect_for: float = Field(default=30.0, gt=0, description="keep trying to reach the tracker for this long")
    unflagged: bool = Field(default=False, description="also connect to listed members without the REACHABLE flag "
                                                       "(trackers that do not test reachability)")
    traffic_interval: float = Field(default=1.0, gt=0, description="period of the traffic event")
    hybrid: HybridParams | None = None

    @model_validator(mode="after")
    def _base(self) -> StreamParams:
        wire.Hello(self.user, bytes(wire.NONCE_SIZE))  # a name the wire can carry
        ipaddress.IPv4Address(self.bind)
        if self.max_partners < self.partners:
            raise ValueError("max_partners must be at least partners")
        return self
