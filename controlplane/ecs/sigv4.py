"""Checks the AWS Signature Version 4 of a request to the ECS-compatible API.

Pure: a received request, a way to find a key's secret and the time in;
who signed it (`Verified`) or one `SignatureError` out, carrying the error
type, HTTP status and message AWS would answer with. The canonical request,
string to sign and signature are botocore's own (`SigV4Auth`), computed with
the request's timestamp, so Berth agrees with the clients that sign by
definition instead of by a second, hand-written canonicalization.

Only the `Authorization` header form is accepted: it is what the aws CLI and
boto3 send. Pre-signed URLs (the signature in the query string) are refused:
they exist to hand out links, which this API has no use for.

Any region in the credential scope is accepted. Clients keep the region
their profile or environment names (often a real AWS region), and the
region only enters the signing key, which the client and Berth derive the
same way; Berth's ARNs use its own configured region, whatever the scope
says. The service in the scope must be `ecs`, so a signature made for
another service is not replayed here.

Everything from the request is checked before it is used: the header is
parsed by full matches with bounded lengths, the date and the scope are
compared, then the key is looked up, and only then is the signature
computed and compared in constant time.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botocore.auth import SIGNED_HEADERS_BLACKLIST, SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_AUTHORIZATION = 4096
MAX_PATH = 2048
MAX_QUERY = 8192
_TIMESTAMP = "%Y%m%dT%H%M%SZ"

# Full matches with bounded repeats; the path and query patterns spell MAX_PATH and
# MAX_QUERY, and SignedHeaders takes at most 64 names.
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 +"
    r"Credential=(?P<key>[A-Za-z0-9]{1,128})/(?P<date>[0-9]{8})/(?P<region>[a-z0-9-]{1,64})/"
    r"(?P<service>[a-z0-9-]{1,64})/aws4_request, *"
    r"SignedHeaders=(?P<headers>[a-z0-9._-]{1,128}(?:;[a-z0-9._-]{1,128}){0,63}), *"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
_METHOD = re.compile(r"[A-Z]{1,16}")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_PATH = re.compile(r"/[\x21-\x22\x24-\x3e\x40-\x7e]{0,2047}")  # printable, no '?' '#'
_QUERY = re.compile(r"[\x21-\x22\x24-\x7e]{0,8192}")  # printable, no '#'
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]{0,8192}")
_PRESIGNED = ("x-amz-algorithm=", "x-amz-credential=", "x-amz-signature=")

MISSING_TOKEN = "Missing Authentication Token"
UNRECOGNIZED = "The security token included in the request is invalid."
MISMATCH = "The request signature we calculated does not match the signature you provided."


class SignatureError(Exception):
    """Why a request is refused: AWS's error type (`code`), the HTTP status and a one-line message."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code
        self.status = status


def _incomplete(message: str) -> SignatureError:
    return SignatureError("IncompleteSignatureException", 400, message)


def _invalid(message: str) -> SignatureError:
    return SignatureError("InvalidSignatureException", 403, message)


@dataclass(frozen=True)
class SignedRequest:
    """A request as received: `path` and `query` raw (percent-encoded, as sent), `headers`
    with names in any case (looked up case-insensitively), the body's bytes."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Verified:
    """Who signed: the access key id (for `AccessKeys.lookup`), and the region the client used."""

    access_key_id: str
    region: str


@dataclass(frozen=True)
class Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header."""

    key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    """The header's parts, or SignatureError (IncompleteSignatureException) for anything else."""
    if len(value) > MAX_AUTHORIZATION:
        raise _incomplete(f"the Authorization header is longer than {MAX_AUTHORIZATION} characters")
    if not value.startswith(ALGORITHM + " "):
        raise _incomplete(f"the Authorization header must use {ALGORITHM} (Signature Version 4)")
    matched = _AUTHORIZATION.fullmatch(value)
    if matched is None:
        raise _incomplete(
            "the Authorization header is not 'AWS4-HMAC-SHA256 "
            "Credential=KEY/YYYYMMDD/REGION/SERVICE/aws4_request, SignedHeaders=a;b, "
            "Signature=' and 64 hexadecimal digits"
        )
    names = tuple(matched["headers"].split(";"))
    if list(names) != sorted(set(names)):
        raise _incomplete("SignedHeaders must list lower-case header names once each, sorted")
    return Authorization(
        key_id=matched["key"],
        date=matched["date"],
        region=matched["region"],
        service=matched["service"],
        signed_headers=names,
        signature=matched["signature"],
    )


def _lowered(headers: Mapping[str, str]) -> tuple[dict[str, str], set[str]]:
    """The headers by lower-case name (the first of each), and the names that appear twice:
    a signed one may not (which value was signed?); an unsigned one a proxy added may."""
    lowered: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in headers.items():
        key = name.lower()
        if key in lowered:
            repeated.add(key)
            continue
        lowered[key] = value
    return lowered, repeated


def _stamp(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime(_TIMESTAMP)


def _check_time(amz_date: str | None, now: float, max_skew: float) -> str:
    if amz_date is None or not _AMZ_DATE.fullmatch(amz_date):
        raise _invalid("the X-Amz-Date header is missing or not a date in the form YYYYMMDD'T'HHMMSS'Z'")
    try:
        signed_at = datetime.datetime.strptime(amz_date, _TIMESTAMP).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise _invalid(f"the X-Amz-Date header {amz_date} is not a valid date") from None
    moment = signed_at.timestamp()
    minutes = f"{max_skew / 60:g} min."
    if moment < now - max_skew:
        raise _invalid(
            f"Signature expired: {amz_date} is now earlier than {_stamp(now - max_skew)} "
            f"({_stamp(now)} - {minutes})"
        )
    if moment > now + max_skew:
        raise _invalid(
            f"Signature not yet current: {amz_date} is still later than {_stamp(now + max_skew)} "
            f"({_stamp(now)} + {minutes})"
        )
    return amz_date


def _expected_signature(
    request: SignedRequest,
    headers: dict[str, str],
    parsed: Authorization,
    amz_date: str,
    secret: str,
) -> str:
    """botocore's signature of the request as the client signed it (its headers, its time)."""
    signed = {name: headers[name] for name in parsed.signed_headers}
    url = "https://berth.invalid" + request.path + (f"?{request.query}" if request.query else "")
    prepared = AWSRequest(method=request.method, url=url, headers=signed, data=request.body)
    prepared.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(parsed.key_id, secret), parsed.service, parsed.region)
    canonical = signer.canonical_request(prepared)
    signature: str = signer.signature(signer.string_to_sign(prepared, canonical), prepared)
    return signature


def verify(
    request: SignedRequest,
    secret_of: Callable[[str], str | None],
    now: float,
    service: str = "ecs",
    max_skew: float = 300.0,
) -> Verified:
    """Who signed `request`; SignatureError (with AWS's type, status and message) otherwise.

    secret_of: the secret of an access key id, None when there is no such (usable) key.
    now: seconds since the epoch. max_skew: seconds the request's time may be off.
    """
    if not _METHOD.fullmatch(request.method):
        raise _incomplete("the request method must be 1 to 16 capital letters")
    if not _PATH.fullmatch(request.path):
        raise _incomplete(
            f"the request path must be printable, start with '/' and be at most {MAX_PATH} long"
        )
    if not _QUERY.fullmatch(request.query):
        raise _incomplete(f"the query string must be printable and at most {MAX_QUERY} long")
    if any(pair.lower().startswith(_PRESIGNED) for pair in request.query.split("&")):
        raise _incomplete("pre-signed URLs are not supported: sign the request in its Authorization header")
    headers, repeated = _lowered(request.headers)
    value = headers.get("authorization")
    if value is None:
        raise SignatureError("MissingAuthenticationTokenException", 403, MISSING_TOKEN)
    if "authorization" in repeated:
        raise _incomplete("the Authorization header appears more than once")
    parsed = parse_authorization(value)
    for needed in ("host", "x-amz-date"):
        if needed not in parsed.signed_headers:
            raise _incomplete(f"SignedHeaders must include {needed}")
    amz_date = _check_time(headers.get("x-amz-date"), now, max_skew)
    for name in parsed.signed_headers:
        if name not in headers:
            raise _incomplete(f"the signed header {name} is not in the request")
        if name in repeated:
            raise _incomplete(f"the signed header {name[:64]!r} appears more than once")
        if name in SIGNED_HEADERS_BLACKLIST:
            raise _incomplete(f"the header {name} cannot be signed (a proxy may change it)")
        if not _HEADER_VALUE.fullmatch(headers[name]):
            raise _incomplete(f"the signed header {name} must be printable ASCII, at most 8192 long")
    if parsed.date != amz_date[:8]:
        raise _invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{parsed.date}' != '{amz_date[:8]}', from 'x-amz-date'."
        )
    if parsed.service != service:
        raise _invalid(f"Credential should be scoped to correct service: '{service}'.")
    content_sha256 = headers.get("x-amz-content-sha256")
    if content_sha256 is not None and not hmac.compare_digest(
        content_sha256.encode(errors="replace"), hashlib.sha256(request.body).hexdigest().encode()
    ):
        raise _invalid("The provided x-amz-content-sha256 header does not match what was computed.")
    secret = secret_of(parsed.key_id)
    if secret is None:
        raise SignatureError("UnrecognizedClientException", 403, UNRECOGNIZED)
    expected = _expected_signature(request, headers, parsed, amz_date, secret)
    if not hmac.compare_digest(expected.encode(), parsed.signature.encode()):
        raise _invalid(MISMATCH)
    return Verified(access_key_id=parsed.key_id, region=parsed.region)
