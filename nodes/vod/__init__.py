"""Video on demand in the emulated network (the DynaPeer paper's system): the code the roles ``vod_server``
(:mod:`nodes.vod_server`) and ``vod_client`` (:mod:`nodes.vod_client`) are made of.

Flow: a client session asks the server (VOD_PLAY); the server's :class:`~nodes.vod.directory.Directory` and the
run's policy (:mod:`nodes.vod.policies`) decide where each part of the video comes from (server unicast,
a multicast channel, other peers) and answer with a VOD_PLAN; :mod:`nodes.vod.senders` pace the parts at the
play rate; the client's :mod:`nodes.vod.player` plays them against deadlines and logs the viewer events.
docs/dynapeer.md describes the emulation.
"""
