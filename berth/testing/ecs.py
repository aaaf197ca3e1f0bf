"""The real clients of Berth's ECS-compatible API, for tests: the `aws` CLI, boto3, and
raw signed requests (for what the clients refuse to send: malformed JSON, bad signatures).

All three read the AWS profile the control plane wrote (`--aws-profile-dir`): endpoint,
region, CA bundle and the administrator's access key, as an operator's tools would.
"""

from __future__ import annotations

import configparser
import datetime
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

PROFILE = "berth"
TARGET = "AmazonEC2ContainerServiceV20141113."
AWS = str(Path(sys.executable).parent / "aws")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass(frozen=True)
class EcsClients:
    profile_dir: Path

    @property
    def _profile(self) -> configparser.SectionProxy:
        config = configparser.ConfigParser()
        config.read(self.profile_dir / "config")
        return config[f"profile {PROFILE}"]

    @property
    def _credentials(self) -> configparser.SectionProxy:
        credentials = configparser.ConfigParser()
        credentials.read(self.profile_dir / "credentials")
        return credentials[PROFILE]

    @property
    def endpoint(self) -> str:
        return self._profile["endpoint_url"]

    @property
    def region(self) -> str:
        return self._profile["region"]

    @property
    def ca_bundle(self) -> str:
        return self._profile["ca_bundle"]

    @property
    def key(self) -> tuple[str, str]:
        section = self._credentials
        return section["aws_access_key_id"], section["aws_secret_access_key"]

    def env(self) -> dict[str, str]:
        """The environment the aws CLI runs with: this profile, nothing from the machine's ~/.aws."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {
            **keep,
            "AWS_CONFIG_FILE": str(self.profile_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.profile_dir / "credentials"),
            "AWS_PROFILE": PROFILE,
            "AWS_PAGER": "",
        }

    def aws(self, *args: str, timeout: float = 60) -> Result:
        """`aws ARGS...` with the profile; exit code and output kept for the test to judge."""
        done = subprocess.run(
            [AWS, *args], capture_output=True, text=True, env=self.env(), timeout=timeout, check=False
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def aws_ok(self, *args: str, timeout: float = 60) -> Any:
        result = self.aws(*args, timeout=timeout)
        assert result.code == 0, f"aws {' '.join(args)} failed ({result.code}): {result.stderr}"
        return result.json() if result.stdout.strip() else {}

    def boto3(self, key: tuple[str, str] | None = None) -> Any:
        """A boto3 ECS client as an operator would build it (key: another access key)."""
        key_id, secret = key or self.key
        return boto3.client(
            "ecs",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            verify=self.ca_bundle,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )

    def raw(
        self,
        operation: str,
        body: bytes | dict[str, Any],
        key: tuple[str, str] | None = None,
        sign: bool = True,
        when: datetime.datetime | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST one request as it is given (signed with botocore's SigV4 unless sign=False)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=data,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": TARGET + operation,
                **(headers or {}),
            },
        )
        if sign:
            key_id, secret = key or self.key
            signer = _Signer(Credentials(key_id, secret), "ecs", self.region, when)
            signer.add_auth(request)
        prepared = request.prepare()
        context = ssl.create_default_context(cafile=self.ca_bundle)
        http = urllib.request.Request(prepared.url, data=data, headers=dict(prepared.headers), method="POST")
        try:
            with urllib.request.urlopen(http, context=context, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


class _Signer(SigV4Auth):  # type: ignore[misc]  # botocore has no type information
    """botocore's SigV4, at a chosen time (to send an expired signature on purpose)."""

    def __init__(
        self, credentials: Credentials, service: str, region: str, when: datetime.datetime | None
    ) -> None:
        super().__init__(credentials, service, region)
        self._when = when

    def add_auth(self, request: AWSRequest) -> None:
        if self._when is None:
            super().add_auth(request)
            return
        stamp = self._when.strftime("%Y%m%dT%H%M%SZ")
        request.context["timestamp"] = stamp
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        signature = self.signature(self.string_to_sign(request, canonical), request)
        self._inject_signature_to_request(request, signature)
