"""The values every layer shares, at the bottom: standard library only, frozen and slotted.

- ``config``: the configuration the call path reads (Account, Peer, Tariff, Rate, Route,
  Subscriber, Did) and the whole of it at one version, :class:`ConfigSnapshot`.
- ``cdr``: a finished call (:class:`CdrRecord`, its attempts) and :class:`HangupSide`.
- ``increment``: billing increments ("60/60"); ``money``: exact amounts and UTC times.
- ``media``: what the call path and the media relay exchange (options, counters, failures).
- ``prefix``: the longest-prefix table behind rates and routes; ``ids``: ULIDs.
- ``cluster``: who the cluster's primary is (:class:`ClusterState`, the epoch) and a
  :class:`Promotion` of its history.

Nothing here imports another smartswitch package: every other package may import this one.
"""
