"""The ``args`` of role ``source`` (nodes/source.py), validated by the runner; the shared streaming fields are in
nodes/stream_config.py. A source process does not import this module (nodes/roles.py).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from nodes import wire
from nodes.stream_config import StreamParams


class Config(StreamParams):
    """``args`` of a source process (the shared fields are in nodes/stream_config.py)."""

    partners: int = Field(default=0, ge=0, le=64, description="partnerships the source opens itself")
    title: str = Field(default="live", max_length=wire.MAX_TEXT, description="the content's title (search)")
    chunk_duration: float = Field(default=1.0, gt=0, description="live: seconds of media per chunk")
    bitrate: int = Field(default=500_000, gt=0, description="live: bit rate of the generated test pattern")
    media: str | None = Field(default=None, description="live: an MPEG-TS file to stream (default: a generated CBR "
                                                        "test pattern at bitrate, media_duration long, looped)")
    media_duration: float = Field(default=60.0, gt=0, description="live: length of the generated pattern (s)")
    produce_for: float | None = Field(default=None, gt=0, description="live: stop making chunks after this long")
    file: str | None = Field(default=None, description="download: the file to publish")
    generate_bytes: int | None = Field(default=None, gt=0, description="download: publish this many seeded random "
                                                                       "bytes instead of a file")
    chunk_bytes: int = Field(default=256 * 1024, gt=0, le=wire.MAX_PAYLOAD - 4096,
                             description="download: bytes per chunk")
    bytes_interval: float = Field(default=1.0, gt=0, description="period of the bytes_sent server event")
    seed_copies: int = Field(default=0, ge=0, le=64,
                             description="live: while its upload is busy, the source refuses (ERROR busy) requests "
                                         "for a chunk it has already sent this many times, so that partners get "
                                         "it from each other and the source's upload goes to chunks no peer has "
                                         "yet (BitTorrent's super-seeding); an idle source serves every request; "
                                         "0 = serve every request")

    @model_validator(mode="after")
    def _source(self) -> Config:
        if self.mode == "download" and (self.file is None) == (self.generate_bytes is None):
            raise ValueError("mode download needs exactly one of file and generate_bytes")
        return self
