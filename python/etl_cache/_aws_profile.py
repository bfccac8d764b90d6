"""Settings of an AWS shared-config profile, for ``S3Cache(bucket)`` without a
client, read the way boto3 reads them (object_store, the engine's S3 client,
reads the environment and instance credentials but not these files).

Only what the files state is used: static keys (``aws_access_key_id``,
``aws_secret_access_key``, ``aws_session_token``), ``region`` and
``endpoint_url``. A profile that gets its credentials another way (SSO, an
assumed role, a ``credential_process``) cannot be followed here: that is an
error saying so, rather than a cache that fails at its first request.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
_ELSEWHERE = ("sso_start_url", "sso_session", "role_arn", "credential_process", "web_identity_token_file")


def _read(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(os.path.expanduser(path), encoding="utf-8")
    except configparser.Error as e:
        raise ValueError(f"cannot read the AWS configuration in {path}: {e}") from None
    return parser


def settings(keys: bool = True) -> dict[str, str]:
    """The profile's settings that the environment does not give already, as
    ``S3Cache`` keywords; empty when there is nothing to add. ``keys=False``
    when the caller has its own credentials (only region and endpoint are
    looked up then). Raises
    ``ValueError`` for a profile named by ``AWS_PROFILE`` that neither file
    has, and for one whose credentials come from elsewhere."""
    env = os.environ
    named = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
    profile = named or "default"
    creds_path = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path("~/.aws/credentials"))
    config_path = env.get("AWS_CONFIG_FILE") or str(Path("~/.aws/config"))
    creds = _read(creds_path)
    config = _read(config_path)
    config_section = profile if profile == "default" else f"profile {profile}"
    in_creds = creds.has_section(profile)
    in_config = config.has_section(config_section)
    if named and not in_creds and not in_config:
        raise ValueError(
            f"AWS_PROFILE names the profile {profile!r}, which neither {creds_path} nor {config_path} has"
        )
    found: dict[str, str] = {}
    # The credentials file wins over the config file, as in boto3.
    for parser, section in ((config, config_section), (creds, profile)):
        if parser.has_section(section):
            for k, v in parser.items(section):
                found[k] = v.strip()
    out: dict[str, str] = {}
    # Keys in the environment win over the files (boto3's order).
    if keys and not env.get("AWS_ACCESS_KEY_ID"):
        if found.get("aws_access_key_id") and found.get("aws_secret_access_key"):
            for k in _KEYS:
                if found.get(k):
                    out[k] = found[k]
        elif any(found.get(k) for k in _ELSEWHERE):
            how = next(k for k in _ELSEWHERE if found.get(k))
            raise ValueError(
                f"the AWS profile {profile!r} gets its credentials through {how}, which "
                "etl_cache cannot follow: pass a boto3 client (client=boto3.client('s3')), "
                "or aws_access_key_id and aws_secret_access_key, or set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY"
            )
    if found.get("region") and not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        out["region_name"] = found["region"]
    if found.get("endpoint_url") and not (env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT")):
        out["endpoint_url"] = found["endpoint_url"]
    return out
