"""Where an S3 artifact store is: ``S3Location.parse(url)``, without importing a driver
(``shared.config`` checks ``CYCLONE_ARTIFACT_STORE`` with it at start-up)::

    s3://[ACCESS:SECRET@]HOST[:PORT]/BUCKET[/PREFIX][?region=R&tls=1&style=path]

* ``ACCESS:SECRET``: the access key pair, percent-encoded (a ``/`` in a secret is
  ``%2F``). Without it, botocore's own chain is asked (``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY``, ``~/.aws/credentials``, an instance role).
* ``HOST[:PORT]``: the S3 endpoint (``s3.eu-west-1.amazonaws.com``, ``minio:9000``).
* ``BUCKET``: an existing bucket; ``PREFIX``: a folder in it for Cyclone's keys (a bucket
  shared with other things).
* ``region`` (default ``us-east-1``): what requests are signed for; ``tls`` (default
  ``1``): ``0`` speaks plain HTTP; ``style`` (default ``path``: ``HOST/BUCKET/KEY``, what
  every S3-compatible server serves): ``virtual`` for ``BUCKET.HOST/KEY``.

The secret never appears in an error or a ``repr``: ``where`` is the URL without it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["S3Location", "mask"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rule for new buckets
_OPTIONS = {"region": None, "tls": ("0", "1"), "style": ("path", "virtual")}
_USER_INFO = re.compile(r"(?<=://)[^/@]*@")


def mask(url: str) -> str:
    """``url`` without its user info (``s3://***@host/bucket``): what errors may show."""
    return _USER_INFO.sub("***@", url)


@dataclass(frozen=True)
class S3Location:
    endpoint_url: str  # http(s)://host[:port]
    bucket: str
    prefix: str  # "" or "some/folder/": every key starts with it
    region: str = "us-east-1"
    addressing_style: Literal["path", "virtual"] = "path"
    access_key: str | None = field(default=None, repr=False)  # None: botocore's chain
    secret_key: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """The location for messages: endpoint, bucket and prefix, never the keys."""
        return f"S3 {self.endpoint_url}/{self.bucket}/{self.prefix}"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """``url``'s parts; ``ValueError`` saying what is wrong (without the secret)."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port  # raises on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parts.scheme != "s3" or not parts.hostname:
            raise ValueError("expected s3://[ACCESS:SECRET@]HOST[:PORT]/BUCKET[/PREFIX]")
        bucket, _, prefix = parts.path.strip("/").partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"bucket {bucket!r}: expected 3 to 63 of a-z, 0-9, '.' and '-' "
                             "after the host (s3://HOST/BUCKET)")
        options = _options(parts.query)
        scheme = "http" if options.get("tls") == "0" else "https"
        netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
        access, secret = _keys(parts)
        return cls(endpoint_url=f"{scheme}://{netloc}", bucket=bucket,
                   prefix=f"{prefix.strip('/')}/" if prefix.strip("/") else "",
                   region=options.get("region", "us-east-1"),
                   addressing_style="virtual" if options.get("style") == "virtual" else "path",
                   access_key=access, secret_key=secret)


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise ValueError(f"unknown option {name!r} (known: {', '.join(_OPTIONS)})")
        allowed = _OPTIONS[name]
        if not value or (allowed is not None and value not in allowed):
            expected = " or ".join(allowed) if allowed else "a value"
            raise ValueError(f"option {name}={value!r}: expected {expected}")
        options[name] = value
    return options


def _keys(parts: urllib.parse.SplitResult) -> tuple[str | None, str | None]:
    """The access key pair the URL gives, percent-decoded; (None, None) when none."""
    if parts.username is None and parts.password is None:
        return None, None
    if not parts.username or not parts.password:
        raise ValueError("credentials: expected ACCESS:SECRET@ (both) or none")
    return urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password)
