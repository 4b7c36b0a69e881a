"""registry:2's ``storage.s3`` parameters, validated without importing the S3 client.

Kept apart from :mod:`cargohold.storage.s3` so that loading a configuration never imports
aiobotocore. Names, defaults and limits are registry:2's (``registry/storage/driver/s3-aws``);
:func:`parse_s3_params` raises :class:`S3ParamError` naming the offending key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cargohold.storage.params import DriverParams, ParamError, Warn
from cargohold.storage.params import duration as _duration
from cargohold.storage.params import flag as _flag
from cargohold.storage.params import integer as _integer
from cargohold.storage.params import text as _text

MIN_CHUNK_SIZE = 5 * 1024 * 1024  # S3's minimum size of every part but the last
MAX_CHUNK_SIZE = 5 * 1024 * 1024 * 1024  # S3's maximum part (and single-copy) size
DEFAULT_CHUNK_SIZE = 2 * MIN_CHUNK_SIZE
DEFAULT_MULTIPART_COPY_CHUNK_SIZE = 32 * 1024 * 1024
DEFAULT_MULTIPART_COPY_MAX_CONCURRENCY = 100
DEFAULT_MULTIPART_COPY_THRESHOLD_SIZE = 32 * 1024 * 1024
# cargohold's own keys: how long one S3 request may take to connect, and to send the next bytes
# of its answer, before it counts as failed (and is retried, then answered 503). registry:2 has
# no such keys and ignores them, so a bucket's config still moves both ways.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
MAX_TIMEOUT = 3600.0

STORAGE_CLASSES = (
    "NONE",
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "OUTPOSTS",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
)
OBJECT_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
KNOWN_KEYS = frozenset(
    {
        "accesskey",
        "secretkey",
        "sessiontoken",
        "region",
        "regionendpoint",
        "forcepathstyle",
        "bucket",
        "rootdirectory",
        "encrypt",
        "keyid",
        "secure",
        "skipverify",
        "v4auth",
        "chunksize",
        "multipartcopychunksize",
        "multipartcopymaxconcurrency",
        "multipartcopythresholdsize",
        "storageclass",
        "objectacl",
        "useragent",
        "usedualstack",
        "accelerate",
        "usefipsendpoint",
        "loglevel",
        "connecttimeout",
        "readtimeout",
    }
)


class S3ParamError(ParamError):
    """A bad ``storage.s3`` parameter (the name S3 code and its tests catch)."""


@dataclass(frozen=True)
class S3Params:
    bucket: str
    region: str
    regionendpoint: str = ""
    forcepathstyle: bool = False
    accesskey: str = ""
    secretkey: str = ""
    sessiontoken: str = ""
    rootdirectory: str = ""
    encrypt: bool = False
    keyid: str = ""
    secure: bool = True
    skipverify: bool = False
    v4auth: bool = True
    chunksize: int = DEFAULT_CHUNK_SIZE
    multipartcopychunksize: int = DEFAULT_MULTIPART_COPY_CHUNK_SIZE
    multipartcopymaxconcurrency: int = DEFAULT_MULTIPART_COPY_MAX_CONCURRENCY
    multipartcopythresholdsize: int = DEFAULT_MULTIPART_COPY_THRESHOLD_SIZE
    storageclass: str = "STANDARD"
    objectacl: str = "private"
    useragent: str = ""
    usedualstack: bool = False
    accelerate: bool = False
    connecttimeout: float = DEFAULT_CONNECT_TIMEOUT
    readtimeout: float = DEFAULT_READ_TIMEOUT

    @property
    def endpoint_url(self) -> str | None:
        """``regionendpoint`` as a URL; ``secure`` picks the scheme when it names none."""
        if not self.regionendpoint:
            return None
        if "://" in self.regionendpoint:
            return self.regionendpoint.rstrip("/")
        return f"{'https' if self.secure else 'http'}://{self.regionendpoint.rstrip('/')}"

    @property
    def identity(self) -> str:
        """What names the stored data: two configs with equal identities share one store."""
        endpoint = self.endpoint_url or f"aws:{self.region}"
        return f"s3|{endpoint}|{self.bucket}|{self.rootdirectory.strip('/')}"


def parse_s3_params(params: Mapping[str, Any]) -> S3Params:
    """Validate registry:2's ``storage.s3`` mapping; raises :class:`S3ParamError`."""
    try:
        return _parse_s3_params(params)
    except S3ParamError:
        raise
    except ParamError as exc:  # from the shared decoders
        raise S3ParamError(exc.key, exc.message) from exc


def _parse_s3_params(params: Mapping[str, Any]) -> S3Params:
    bucket = _text(params, "bucket")
    if not bucket:
        raise S3ParamError("bucket", "is required")
    regionendpoint = _text(params, "regionendpoint")
    region = _text(params, "region")
    if not region:
        if not regionendpoint:
            raise S3ParamError("region", "is required (unless regionendpoint is set)")
        region = "us-east-1"
    if regionendpoint:
        parts = urlsplit(regionendpoint if "://" in regionendpoint else f"x://{regionendpoint}")
        if not parts.netloc:
            raise S3ParamError("regionendpoint", f"not a URL or host: {regionendpoint!r}")
    v4auth = _flag(params, "v4auth", True)
    if not v4auth and (not regionendpoint or "amazonaws.com" in regionendpoint):
        raise S3ParamError("v4auth", "Amazon S3 only accepts v4 authentication")
    storageclass = _text(params, "storageclass", "STANDARD").upper()
    if storageclass not in STORAGE_CLASSES:
        raise S3ParamError("storageclass", f"expected one of {', '.join(STORAGE_CLASSES)}")
    objectacl = _text(params, "objectacl", "private")
    if objectacl not in OBJECT_ACLS:
        raise S3ParamError("objectacl", f"expected one of {', '.join(OBJECT_ACLS)}")
    accesskey = _text(params, "accesskey")
    secretkey = _text(params, "secretkey")
    if bool(accesskey) != bool(secretkey):
        raise S3ParamError(
            "accesskey" if not accesskey else "secretkey",
            "accesskey and secretkey go together (omit both to use the AWS credential chain)",
        )
    return S3Params(
        bucket=bucket,
        region=region,
        regionendpoint=regionendpoint,
        forcepathstyle=_flag(params, "forcepathstyle", False),
        accesskey=accesskey,
        secretkey=secretkey,
        sessiontoken=_text(params, "sessiontoken"),
        rootdirectory=_text(params, "rootdirectory"),
        encrypt=_flag(params, "encrypt", False),
        keyid=_text(params, "keyid"),
        secure=_flag(params, "secure", True),
        skipverify=_flag(params, "skipverify", False),
        v4auth=v4auth,
        chunksize=_integer(params, "chunksize", DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
        multipartcopychunksize=_integer(
            params,
            "multipartcopychunksize",
            DEFAULT_MULTIPART_COPY_CHUNK_SIZE,
            MIN_CHUNK_SIZE,
            MAX_CHUNK_SIZE,
        ),
        multipartcopymaxconcurrency=_integer(
            params,
            "multipartcopymaxconcurrency",
            DEFAULT_MULTIPART_COPY_MAX_CONCURRENCY,
            1,
            10_000,
        ),
        multipartcopythresholdsize=_integer(
            params,
            "multipartcopythresholdsize",
            DEFAULT_MULTIPART_COPY_THRESHOLD_SIZE,
            0,
            MAX_CHUNK_SIZE,
        ),
        storageclass=storageclass,
        objectacl=objectacl,
        useragent=_text(params, "useragent"),
        usedualstack=_flag(params, "usedualstack", False),
        accelerate=_flag(params, "accelerate", False),
        connecttimeout=_duration(
            params, "connecttimeout", DEFAULT_CONNECT_TIMEOUT, 0.001, MAX_TIMEOUT
        ),
        readtimeout=_duration(params, "readtimeout", DEFAULT_READ_TIMEOUT, 0.001, MAX_TIMEOUT),
    )


def _validate(params: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    """Config keeps the parameters as given; the S3 driver parses them again when it starts."""
    parse_s3_params(params)
    return dict(params)


PARAMS = DriverParams(KNOWN_KEYS, _validate)
