"""Stand-ins for the recorder's ports where the test is about the recorder itself."""

from __future__ import annotations

from smartswitch.capture.recorder import CaptureJob

Address = tuple[str, int]


class ListSink:
    """A sink that keeps the jobs it is given (the writer thread is tested on its own)."""

    def __init__(self) -> None:
        self.jobs: list[CaptureJob] = []
        self.error: str | None = None
        self.files_written = 0
        self.write_errors = 0
        self.messages_dropped = 0
        self.files_deleted = 0

    def submit(self, job: CaptureJob) -> None:
        self.jobs.append(job)


class ListHep:
    """A HEP sender that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.sent_messages: list[tuple[bytes, str, Address, Address, bytes, float]] = []
        self.errors = 0

    @property
    def sent(self) -> int:
        return len(self.sent_messages)

    def send(
        self,
        correlation_id: bytes,
        transport: str,
        src: Address,
        dst: Address,
        data: bytes,
        wall_time: float,
    ) -> None:
        self.sent_messages.append((correlation_id, transport, src, dst, data, wall_time))
