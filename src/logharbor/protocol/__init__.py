"""The wire protocol shared by the LogHarbor server and SDK: schema, codecs, errors, signing."""

from .codec import (
    CodecError,
    Compression,
    Frame,
    decode_cursor,
    encode_cursor,
    format_hash_key,
    hash_key_of,
    parse_hash_key,
)
from .errors import ErrorCode, ServiceError

__all__ = [
    "CodecError",
    "Compression",
    "ErrorCode",
    "Frame",
    "ServiceError",
    "decode_cursor",
    "encode_cursor",
    "format_hash_key",
    "hash_key_of",
    "parse_hash_key",
]
