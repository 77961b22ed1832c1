"""The node wiring: what ``smartswitch run`` builds and starts, in one event loop.

- ``config``: the node's TOML configuration (every flag of ``run`` has a key; a bad file names
  its line).
- ``node``: :class:`Node`, the whole switch: transports, the B2BUA and its policy, the HTTP
  side, the background tasks, start and clean shutdown.
- ``services``: the store side of a billing node (schema upgrade, configuration views kept
  fresh, the outbox and its forwarder, balances).
- ``registrar``: the registrar's sans-IO parts wired to the B2BUA and the store.
- ``reload`` and ``reader``: configuration reloads off the event loop (read in a process of
  its own, indexed in a thread, swapped in on the loop).
- ``webport``: the node as the web side sees it (``smartswitch.web.ports.NodePort``).

Everything else is imported from here, never the other way round.
"""
