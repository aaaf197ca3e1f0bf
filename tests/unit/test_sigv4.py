"""SigV4 verification against requests signed by botocore itself, as boto3 and the aws CLI sign them."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import time
from typing import Any
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest, AWSResponse  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.ecs.sigv4 import (
    MISMATCH,
    MISSING_TOKEN,
    UNRECOGNIZED,
    SignatureError,
    SignedRequest,
    Verified,
    parse_authorization,
    verify,
)

KEY = "AKIAABCDEFGHIJKLMNOP"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:7402"
TARGET = "AmazonEC2ContainerServiceV20141113.ListClusters"
BODY = b'{"maxResults": 10}'
T0 = datetime.datetime(2026, 11, 27, 8, 30, 0, tzinfo=datetime.UTC)
NOW = T0.timestamp()


def secret_of(key_id: str) -> str | None:
    return SECRET if key_id == KEY else None


def signed(
    *,
    secret: str = SECRET,
    key_id: str = KEY,
    body: bytes = BODY,
    region: str = "us-east-1",
    service: str = "ecs",
    at: datetime.datetime = T0,
    headers: dict[str, str] | None = None,
    path: str = "/",
    query: str = "",
) -> SignedRequest:
    """A request signed by botocore's SigV4Auth at `at`, as the server receives it."""
    url = f"https://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "X-Amz-Target": TARGET,
            "Content-Type": "application/x-amz-json-1.1",
            **(headers or {}),
        },
    )
    signer = SigV4Auth(Credentials(key_id, secret), service, region)
    with pytest.MonkeyPatch.context() as patch:  # botocore signs "now": make it `at`
        patch.setattr("botocore.auth.get_current_datetime", lambda: at.replace(tzinfo=None))
        signer.add_auth(request)
    received = {"Host": HOST, "User-Agent": "aws-cli/2", **dict(request.headers.items())}
    return SignedRequest("POST", path, query, received, body)


def changed(request: SignedRequest, **fields: Any) -> SignedRequest:
    return dataclasses.replace(request, **fields)


def with_headers(request: SignedRequest, **replaced: str | None) -> SignedRequest:
    """`replaced` by lower-case name (underscores for dashes); None removes the header."""
    names = {name.replace("_", "-"): value for name, value in replaced.items()}
    headers = {k: v for k, v in request.headers.items() if k.lower() not in names}
    headers.update({k: v for k, v in names.items() if v is not None})
    return changed(request, headers=headers)


def refused(request: SignedRequest, now: float = NOW, secrets: Any = secret_of) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(request, secrets, now)
    error = caught.value
    assert "\n" not in str(error) and str(error)
    return error


# -- what real clients send -------------------------------------------------------------


def test_a_request_boto3_sends_is_verified() -> None:
    """boto3's ECS client, end to end up to the wire: the request it would send is captured."""
    captured: list[Any] = []

    def capture(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        return AWSResponse(request.url, 200, {}, None)

    client = boto3.Session(
        aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="eu-west-3"
    ).client("ecs", endpoint_url=f"https://{HOST}")
    client.meta.events.register("before-send.ecs.ListClusters", capture)
    try:
        client.list_clusters(maxResults=5)
    except Exception:
        pass
    (sent,) = captured
    parts = urlsplit(sent.url)
    headers = {"Host": parts.netloc, **{k: v for k, v in sent.headers.items()}}
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
    request = SignedRequest(sent.method, parts.path, parts.query, headers, sent.body)
    assert verify(request, secret_of, time.time()) == Verified(KEY, "eu-west-3")
    assert refused(request, secrets=lambda _: SECRET.replace("w", "x")).code == "InvalidSignatureException"


def test_a_signed_request_is_verified_in_any_region() -> None:
    for region in ("us-east-1", "eu-central-2", "local"):
        assert verify(signed(region=region), secret_of, NOW) == Verified(KEY, region)


def test_headers_outside_the_signature_may_change() -> None:
    request = with_headers(signed(), user_agent="something-else", x_forwarded_for="10.0.0.1")
    assert verify(request, secret_of, NOW).access_key_id == KEY


def test_header_names_are_matched_in_any_case() -> None:
    request = signed()
    lowered = changed(request, headers={k.lower(): v for k, v in request.headers.items()})
    assert verify(lowered, secret_of, NOW).access_key_id == KEY
    upper = changed(request, headers={k.upper(): v for k, v in request.headers.items()})
    assert verify(upper, secret_of, NOW).access_key_id == KEY


def test_a_path_and_a_query_are_part_of_the_signature() -> None:
    request = signed(path="/some/path", query="b=2&a=1")
    assert verify(request, secret_of, NOW).access_key_id == KEY
    assert refused(changed(request, path="/other/path")).args[0] == MISMATCH
    assert refused(changed(request, query="a=1&b=3")).args[0] == MISMATCH


# -- forgeries ------------------------------------------------------------------------------


def test_a_wrong_secret_is_refused() -> None:
    error = refused(signed(secret=SECRET[:-1] + "X"))
    assert (error.code, error.status, str(error)) == ("InvalidSignatureException", 403, MISMATCH)


def test_a_tampered_body_is_refused() -> None:
    error = refused(changed(signed(), body=b'{"maxResults": 11}'))
    assert (error.code, str(error)) == ("InvalidSignatureException", MISMATCH)


def test_a_content_hash_that_is_not_the_bodys_is_refused() -> None:
    request = signed(headers={"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    assert verify(request, secret_of, NOW).access_key_id == KEY
    error = refused(changed(request, body=b"{}"))
    assert error.code == "InvalidSignatureException" and "x-amz-content-sha256" in str(error)
    unsigned = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert refused(unsigned).code == "InvalidSignatureException"


@pytest.mark.parametrize(
    "header, value",
    [
        ("x-amz-target", "AmazonEC2ContainerServiceV20141113.DeleteCluster"),
        ("content-type", "application/json"),
        ("host", "evil.example:7402"),
        ("x-amz-date", "20261127T083001Z"),
    ],
)
def test_a_tampered_signed_header_is_refused(header: str, value: str) -> None:
    error = refused(with_headers(signed(), **{header.replace("-", "_"): value}))
    assert (error.code, error.status, str(error)) == ("InvalidSignatureException", 403, MISMATCH)


def test_an_unknown_key_is_refused() -> None:
    error = refused(signed(key_id="AKIAZZZZZZZZZZZZZZZZ"))
    assert (error.code, error.status, str(error)) == ("UnrecognizedClientException", 403, UNRECOGNIZED)


@pytest.mark.parametrize("offset", [301.0, -301.0, 86400.0 * 365])
def test_a_request_signed_more_than_five_minutes_away_from_now_is_refused(offset: float) -> None:
    request = signed()
    assert verify(request, secret_of, NOW + 299).access_key_id == KEY
    assert verify(request, secret_of, NOW - 299).access_key_id == KEY
    error = refused(request, now=NOW + offset)
    assert (error.code, error.status) == ("InvalidSignatureException", 403)
    expected = "Signature expired: 20261127T083000Z" if offset > 0 else "Signature not yet current"
    assert str(error).startswith(expected), str(error)


def test_the_scope_must_be_the_requests_date_and_ecs() -> None:
    yesterday = T0 - datetime.timedelta(days=1)
    # Signed yesterday (the scope's date), then its X-Amz-Date moved to today.
    request = with_headers(signed(at=yesterday), x_amz_date=T0.strftime("%Y%m%dT%H%M%SZ"))
    error = refused(request)
    assert error.code == "InvalidSignatureException" and "'20261126' != '20261127'" in str(error)
    error = refused(signed(service="sts"))
    assert (error.code, str(error)) == (
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'ecs'.",
    )


# -- missing and malformed ----------------------------------------------------------------------


def test_no_authorization_is_a_missing_token() -> None:
    error = refused(with_headers(signed(), authorization=None))
    assert (error.code, error.status, str(error)) == (
        "MissingAuthenticationTokenException",
        403,
        MISSING_TOKEN,
    )


def test_a_pre_signed_url_is_refused() -> None:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F20261127&X-Amz-Signature=ab"
    )
    for request in (
        changed(signed(), query=query),
        with_headers(changed(signed(), query=query), authorization=None),
    ):
        error = refused(request)
        assert error.code == "IncompleteSignatureException" and "Authorization header" in str(error)


def _authorization(request: SignedRequest) -> str:
    return next(v for k, v in request.headers.items() if k.lower() == "authorization")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda a: "",
        lambda a: "AWS4-HMAC-SHA1 " + a.split(" ", 1)[1],
        lambda a: a.replace("Credential=", "Credentials="),
        lambda a: a.replace("/aws4_request", "/aws5_request"),
        lambda a: a.replace("SignedHeaders=", "SignedHeaders=Host;"),
        lambda a: a.replace("SignedHeaders=", "SignedHeaders=zzz;"),  # not sorted
        lambda a: a.replace("content-type;", "content-type;content-type;"),
        lambda a: a[:-1],
        lambda a: a + "0",
        lambda a: a.upper(),
        lambda a: a + ", Extra=1",
        lambda a: a.replace(", ", "\n"),
        lambda a: a + " " * 5000,
        lambda a: a.replace("Signature=", "Signature=" + "0" * 64 + ","),
        lambda a: a.replace(KEY, KEY + "/x"),
        lambda a: a.replace(KEY, "AKIA\u00c0BCDEFGHIJKLMNOP"),
    ],
)
def test_a_malformed_authorization_header_is_incomplete(mangle: Any) -> None:
    request = signed()
    error = refused(with_headers(request, authorization=mangle(_authorization(request))))
    assert (error.code, error.status) == ("IncompleteSignatureException", 400), str(error)


@pytest.mark.parametrize("name", ["host", "x-amz-date"])
def test_host_and_the_date_must_be_signed(name: str) -> None:
    request = signed()
    authorization = _authorization(request).replace(f"{name};", "").replace(f";{name}", "")
    error = refused(with_headers(request, authorization=authorization))
    assert error.code == "IncompleteSignatureException" and name in str(error)


def test_a_signed_header_the_request_lacks_is_incomplete() -> None:
    error = refused(with_headers(signed(), x_amz_target=None))
    assert error.code == "IncompleteSignatureException" and "x-amz-target" in str(error)


@pytest.mark.parametrize(
    "value", [None, "", "2026-11-27T08:30:00Z", "20261327T083000Z", "20261127T083000", "२०२६"]
)
def test_a_missing_or_malformed_date_is_refused(value: str | None) -> None:
    error = refused(with_headers(signed(), x_amz_date=value))
    assert error.code == "InvalidSignatureException" and "X-Amz-Date" in str(error)


def test_a_header_given_twice_in_different_cases_is_refused() -> None:
    request = signed()
    headers = {**request.headers, "x-amz-target": TARGET}
    assert refused(changed(request, headers=headers)).code == "IncompleteSignatureException"


@pytest.mark.parametrize(
    "fields",
    [
        {"path": ""},
        {"path": "no-slash"},
        {"path": "/a b"},
        {"path": "/" + "a" * 3000},
        {"path": "/\u00e9"},
        {"query": "a=1#frag"},
        {"query": "a=\n"},
        {"method": "post"},
        {"method": "P" * 40},
    ],
)
def test_a_hostile_path_query_or_method_is_incomplete(fields: dict[str, str]) -> None:
    assert refused(changed(signed(), **fields)).code == "IncompleteSignatureException"


def test_non_text_in_a_signed_header_is_refused_in_one_line() -> None:
    request = with_headers(signed(), x_amz_target="\udcff")
    assert refused(request).code in ("IncompleteSignatureException", "InvalidSignatureException")


# -- fuzzing: nothing but SignatureError ever comes out -------------------------------------------

_NEAR_VALID = st.from_regex(
    r"AWS4-HMAC-SHA256 {0,2}Credential=[A-Za-z0-9/]{0,30}/[0-9]{6,9}/[a-z0-9-]{0,12}/[a-z]{0,5}/aws4_request"
    r",? {0,2}SignedHeaders=[a-z;.-]{0,40},? {0,2}Signature=[0-9a-fA-F]{60,66}",
    fullmatch=True,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), _NEAR_VALID))
def test_the_authorization_parser_raises_only_signature_errors(value: str) -> None:
    try:
        parsed = parse_authorization(value)
    except SignatureError as error:
        assert "\n" not in str(error)
        return
    assert len(parsed.signature) == 64 and parsed.signed_headers


_HEADER_TEXT = st.text(max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    authorization=st.one_of(_NEAR_VALID, st.text(max_size=200)),
    amz_date=st.one_of(st.none(), st.from_regex(r"[0-9]{8}T[0-9]{6}Z", fullmatch=True), _HEADER_TEXT),
    extra=st.dictionaries(
        st.sampled_from(["host", "x-amz-target", "content-type", "x-amz-content-sha256"]), _HEADER_TEXT
    ),
    path=st.one_of(st.just("/"), st.text(max_size=40)),
    query=st.text(max_size=40),
    body=st.binary(max_size=64),
)
def test_verify_raises_only_signature_errors(
    authorization: str, amz_date: str | None, extra: dict[str, str], path: str, query: str, body: bytes
) -> None:
    headers = {"Authorization": authorization, **extra}
    if amz_date is not None:
        headers["X-Amz-Date"] = amz_date
    request = SignedRequest("POST", path, query, headers, body)
    try:
        verify(request, lambda key: SECRET, NOW)
    except SignatureError as error:
        assert "\n" not in str(error) and error.status in (400, 403)


class _Repeated(dict[str, str]):
    """Headers as an HTTP server hands them over, one (name, value) per line received."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def items(self) -> Any:
        return iter(self._pairs)


def test_a_repeated_unsigned_header_is_allowed_a_repeated_signed_one_is_not() -> None:
    request = signed()
    pairs = list(request.headers.items())
    proxied = changed(request, headers=_Repeated([*pairs, ("Via", "1.1 a"), ("via", "1.1 b")]))
    assert verify(proxied, secret_of, NOW).access_key_id == KEY
    date = next(value for name, value in pairs if name.lower() == "x-amz-date")
    doubled = changed(request, headers=_Repeated([*pairs, ("X-Amz-Date", date)]))
    assert refused(doubled).code == "IncompleteSignatureException"
