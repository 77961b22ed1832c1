"""Building REGISTERs and subscribers for the registrar tests."""

from __future__ import annotations

import ipaddress
import itertools

from smartswitch.model.config import Subscriber
from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.registrar.location import LocationService
from smartswitch.registrar.registrar import Registrar, RegistrarSettings
from smartswitch.sip.digest import DigestAuthenticator, build_authorization, compute_ha1
from smartswitch.sip.message import Request, Response, parse_message
from smartswitch.sip.transaction import Address

REALM = "switch.example"
SECRET = b"registrar-tests-secret-0123456789"
T0 = 1_700_000_000.0
PHONE = Address("udp", "192.0.2.10", 40000)
URI = "sip:switch.example"

_branches = itertools.count(1)


def subscriber(
    username: str = "alice",
    password: str = "secret",
    *,
    id: int = 1,
    max_contacts: int = 3,
    allowed: tuple[str, ...] = (),
    enabled: bool = True,
    realm: str = REALM,
) -> Subscriber:
    return Subscriber(
        id=id,
        username=username,
        account_id=1,
        tariff_id=None,
        realm=realm,
        ha1_md5=compute_ha1(username, realm, password, "MD5"),
        ha1_sha256=compute_ha1(username, realm, password, "SHA-256"),
        allowed_cidrs=tuple(ipaddress.ip_network(a) for a in allowed),
        max_contacts=max_contacts,
        enabled=enabled,
    )


def make_registrar(
    *subscribers: Subscriber,
    guard: GuardSettings | None = None,
    nonce_ttl: float = 300.0,
    algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
    **settings: int,
) -> Registrar:
    registrar = Registrar(
        LocationService(),
        DigestAuthenticator(REALM, SECRET, nonce_ttl=nonce_ttl, algorithms=algorithms),
        SourceGuard(guard or GuardSettings(rate=0)),
        RegistrarSettings(node="test", **settings),
    )
    subs = subscribers or (subscriber(),)
    registrar.update({s.username: s for s in subs})
    return registrar


def register(
    user: str = "alice",
    contacts: tuple[str, ...] = ("<sip:alice@192.168.1.10:5060>",),
    *,
    expires: int | None = 600,
    call_id: str = "call-1@phone",
    cseq: int = 1,
    authorization: str | None = None,
    to_user: str | None = None,
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        f"REGISTER {URI} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK{next(_branches)};rport",
        f"From: <sip:{user}@switch.example>;tag=ft1",
        f"To: <sip:{to_user or user}@switch.example>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
        "User-Agent: test-phone/1.0",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def challenge_of(response: Response, algorithm: str = "MD5") -> str:
    """The WWW-Authenticate value of ``algorithm`` in a 401."""
    assert response.status == 401, response
    for value in response.headers.get_lines("www-authenticate"):
        if f"algorithm={algorithm}" in value:
            return value
    raise AssertionError(
        f"no {algorithm} challenge in {response.headers.get_lines('www-authenticate')}"
    )


def answer(
    response: Response,
    user: str = "alice",
    password: str = "secret",
    *,
    nc: int = 1,
    algorithm: str = "MD5",
    uri: str = URI,
) -> str:
    return build_authorization(
        challenge_of(response, algorithm), "REGISTER", uri, user, password, nc
    )


def registered(
    registrar: Registrar,
    now: float = T0,
    source: Address = PHONE,
    user: str = "alice",
    password: str = "secret",
    **kwargs: object,
) -> Response:
    """Register through the challenge: the final response."""
    cseq = int(kwargs.pop("cseq", 1))  # type: ignore[call-overload]
    first = registrar.handle(register(user, cseq=cseq, **kwargs), source, now)  # type: ignore[arg-type]
    assert first.status == 401, first
    auth = answer(first, user, password)
    return registrar.handle(
        register(user, cseq=cseq + 1, authorization=auth, **kwargs),  # type: ignore[arg-type]
        source,
        now,
    )
