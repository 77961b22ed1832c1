"""Media relay: rtpengine over its ng control protocol.

- ``bencode``: the ng protocol's encoding; ``ng``: an asyncio client of one rtpengine.
- ``engine``: :class:`MediaEngine`, the pool of rtpengines the B2BUA's media port is served by
  (weighted, sticky by call, health by ping).
- ``supervisor``: runs the node's own rtpengine (command line, restarts, stop).
- ``recording``: finds a call's pcap and turns it into a WAV.

The values the call path exchanges with it (options, counters, failures) are in
``smartswitch.model.media``.
"""
