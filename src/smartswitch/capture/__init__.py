"""Call capture: the SIP of both legs of a call, as one pcap file per call and as HEP3.

What it does
------------
For every captured call, each SIP message of both legs, as it crossed the wire (real addresses
and ports, UDP or TCP, the time it was sent or received), goes into one pcap file named after
the call's CDR id, which tshark and Wireshark read and show as a two-leg call.  Optionally each
message is also sent as HEP3 to a Homer collector, with one correlation id (the A leg's
Call-ID) linking both legs.  Which calls: a setting (:class:`CapturePolicy`): none, all, or the
calls of selected customers and suppliers.

The call path pays one dictionary look-up and one list append per message of a captured call
(nothing at all while no call is captured); files are written by one writer thread when a call
ends; retention (by age and total size, oldest first) runs in that thread too.  A full or
unwritable capture directory stops capturing (``error`` is set, for the dashboard and /metrics)
and capturing resumes by itself when the directory is writable again; calls never notice.

The pieces
----------
``recorder.CaptureRecorder`` (event loop, no I/O)
    ``start(a_call_id, now, customer=peer_id) -> bool``: a call begins.
    ``add_leg(a_call_id, b_call_id, supplier=peer_id)``: it has a B leg (each fork/failover).
    ``message(transport, src, dst, data, wall_time)``: any message crossed the wire.
    ``end(a_call_id, cdr_id, now)``: the call is over; its file is written ``linger`` s later.
    ``discard(a_call_id)``: forget a call without a file.
    ``poll(now)``: hand over calls whose linger is over (call about once a second).
    ``close()``: at shutdown, hand over every ended call.
    ``policy``: the setting, replaceable at any time. ``stats() -> CaptureStats``: counters.
``recorder.CapturePolicy(mode, customers, suppliers)``; ``CaptureMode``: off | all | selected.
``writer.CaptureWriter(directory, on_written=, on_deleted=, retention=, retry_interval=30)``
    The sink: ``start()``, ``submit(job)``, ``stop()``; ``error``, ``files_written``,
    ``write_errors``, ``messages_dropped``, ``files_deleted``; ``write(job)``, ``probe()``,
    ``sweep()`` run the thread's work directly.
``writer.relative_path(cdr_id)``: ``yyyy/mm/dd/<cdr_id>.pcap`` (UTC date from the ULID), where
    any node (the CDR page, the API's download) finds a call's capture.
``retention.Retention(max_age, max_bytes)`` / ``Retention.days(d, max_bytes)``;
    ``retention.sweep(directory, retention, now) -> deleted paths``.
``sender.HepSender(host, port, capture_id, auth_key=None)``: non-blocking UDP to the collector.
``hep.encode(HepMessage) -> bytes`` / ``hep.decode(bytes) -> HepMessage``: the HEP3 codec.
``pcap.pcap_bytes(messages) -> bytes``: a whole pcap file (LINKTYPE_RAW, IPv4/IPv6, UDP/TCP).

Wiring it in
------------
At node start (the runtime)::

    writer = CaptureWriter(capture_dir, on_written=sync.add, on_deleted=sync.forget,
                           retention=Retention.days(30, 20 * 2**30))
    writer.start()
    hep = HepSender(host, port, capture_id) if homer_configured else None
    recorder = CaptureRecorder(CapturePolicy(CaptureMode.ALL), writer, hep)
    # every second: recorder.poll(loop.time()); on a config change: recorder.policy = ...
    # at shutdown: recorder.close(); writer.stop()

The transport reports every message, in both directions, with the addresses that were really
on the wire (for a wildcard bind, the local address the kernel chose: ``local_for``; for TCP,
the connection's ``sockname``/``peername``)::

    # received: after the SIP core has handled it (so the call it starts exists), with the
    # time it arrived
    recorder.message(transport, (peer_host, peer_port), (local_host, local_port), data, t_rx)
    # sent: when written to the socket
    recorder.message(transport, (local_host, local_port), (peer_host, peer_port), data, t_tx)

The B2BUA, which knows both legs' Call-IDs::

    recorder.start(a_leg_call_id, loop.time(), customer=customer_peer_id)   # on the INVITE
    recorder.add_leg(a_leg_call_id, b_leg_call_id, supplier=supplier_peer_id)  # per B leg
    recorder.end(a_leg_call_id, cdr.id, loop.time())   # when the CDR is made

(Each ``start`` that is not followed by an ``end`` needs a ``discard``.)

Modules: ``pcap`` and ``hep`` are pure (bytes in, bytes out); ``recorder`` is pure apart from
calling its sink and HEP sender; ``writer``, ``retention`` and ``sender`` do the I/O.
Standard library only.
"""

from smartswitch.capture.hep import HepError, HepMessage
from smartswitch.capture.pcap import CapturedMessage, pcap_bytes
from smartswitch.capture.recorder import (
    CaptureJob,
    CaptureMode,
    CapturePolicy,
    CaptureRecorder,
    CaptureStats,
)
from smartswitch.capture.retention import Retention
from smartswitch.capture.sender import HepSender
from smartswitch.capture.writer import CaptureWriter, relative_path

__all__ = [
    "CaptureJob",
    "CaptureMode",
    "CapturePolicy",
    "CaptureRecorder",
    "CaptureStats",
    "CaptureWriter",
    "CapturedMessage",
    "HepError",
    "HepMessage",
    "HepSender",
    "Retention",
    "pcap_bytes",
    "relative_path",
]
