"""The AWS profile the quick start uses: `aws --profile berth ecs ...` and boto3 with nothing else set.

At the first start of a fresh cluster the control plane writes, besides the
administrator's Berth config, an access key for `admin` into the AWS shared
files: `credentials` gets `[berth]` (the key id and secret) and `config`
gets `[profile berth]` (the region, the ECS API's endpoint, the cluster CA
to trust for it, JSON output). The AWS CLI, boto3 and every SDK that reads
these files then reach Berth with `--profile berth` / `profile_name="berth"`.

These files are the operator's own: only the one profile's section is
replaced, every other byte (other profiles, comments) is kept as it was, and
a file that does not parse is left alone rather than rewritten. Both are
written atomically (temporary file, rename) with mode 0600, in a 0700
directory, since `credentials` holds a secret.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from berth.files import private_dir, write_private

CREDENTIALS_FILE = "credentials"
CONFIG_FILE = "config"
_PROFILE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADER = re.compile(r"\[(?P<name>[^\]]+)\]\s*(?:[#;].*)?")


class ProfileError(Exception):
    """The profile cannot be written (the message says why, in one line)."""


def _parse(text: str, path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as error:
        raise ProfileError(
            f"{path} is not a valid AWS config file ({type(error).__name__}); left as it is"
        ) from None
    return parser


def _sections(parser: configparser.ConfigParser) -> dict[str, dict[str, str]]:
    return {name: dict(parser[name]) for name in parser.sections()}


def _header(line: str) -> str | None:
    """The section a line opens ("[name]" at the start of the line), else None."""
    matched = _HEADER.fullmatch(line.rstrip("\r\n"))
    return matched["name"] if matched else None


def replace_section(text: str, section: str, values: dict[str, str], path: Path) -> str:
    """`text` (an INI file) with `section` replaced by `values` (appended when absent);
    every other line kept. ProfileError when `text` does not parse, or would not keep
    the other sections exactly."""
    before = _sections(_parse(text, path))
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _header(line) is not None]
    start = next((i for i in headers if _header(lines[i]) == section), None)
    body = [f"[{section}]\n", *(f"{key} = {value}\n" for key, value in values.items())]
    if start is None:
        separator = [] if not lines else (["\n"] if lines[-1].endswith("\n") else ["\n", "\n"])
        updated = lines + separator + body
    else:
        end = next((i for i in headers if i > start), len(lines))
        tail = ["\n"] if end < len(lines) else []
        updated = lines[:start] + body + tail + lines[end:]
    result = "".join(updated)
    after = _sections(_parse(result, path))
    expected = {name: content for name, content in before.items() if name != section}
    if after.pop(section, None) != values or after != expected:
        raise ProfileError(f"{path} has a layout the profile cannot be merged into safely; left as it is")
    return result


def _update(path: Path, section: str, values: dict[str, str]) -> None:
    target = path.resolve() if path.is_symlink() else path
    try:
        text = target.read_text() if target.exists() else ""
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"cannot read {target}: {error}") from None
    write_private(target, replace_section(text, section, values, target))


def write_aws_profile(
    directory: Path,
    profile: str,
    endpoint_url: str,
    region: str,
    key_id: str,
    secret: str,
    ca_bundle: Path,
) -> None:
    """Write (or replace) `profile` in `directory`'s `credentials` and `config`, keeping the rest.

    ProfileError (one line) when a value is not one line of text or a file cannot be merged.
    """
    if not _PROFILE.fullmatch(profile):
        raise ProfileError(f"profile name {profile!r} must be 1-64 letters, digits, '-' or '_'")
    values = {
        "endpoint_url": endpoint_url,
        "region": region,
        "key id": key_id,
        "secret": secret,
        "ca_bundle": str(ca_bundle),
    }
    for what, value in values.items():
        if not value or not value.isprintable() or value != value.strip():
            raise ProfileError(f"the profile's {what} must be one line of printable text")
    private_dir(directory)
    _update(
        directory / CREDENTIALS_FILE,
        profile,
        {"aws_access_key_id": key_id, "aws_secret_access_key": secret},
    )
    _update(
        directory / CONFIG_FILE,
        profile if profile == "default" else f"profile {profile}",
        {"region": region, "endpoint_url": endpoint_url, "ca_bundle": str(ca_bundle), "output": "json"},
    )
