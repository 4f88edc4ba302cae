"""Rules of uploaded files: the names they are stored under and the media types they are served with."""

import mimetypes
import os
import re
import unicodedata

from werkzeug.datastructures import FileStorage

from webapp.errors import ValidationError
from webapp.fields import unstorable_text

MAX_FILE_NAME_BYTES = 200
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def sanitise_file_name(raw: str, field: str = "record_file") -> str:
    """The last path component of ``raw`` without control characters or leading dots, at most 200 bytes of
    UTF-8 (file systems count bytes); 422 on ``field`` if nothing is left."""
    if unstorable_text(raw.replace("\0", "")):  # bytes that were not UTF-8, kept as surrogates
        raise ValidationError({field: "The file name is not UTF-8 text; send it in UTF-8."})
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().lstrip(".").strip()
    if not name:
        raise ValidationError({field: f"The file name {raw!r} has no usable characters."})
    stem, ext = os.path.splitext(name)
    ext = ext if len(ext.encode()) <= 20 else ""
    while len((stem + ext).encode()) > MAX_FILE_NAME_BYTES:
        stem = stem[:-1]
    return (stem + ext) or "file"


def content_type_for(upload: FileStorage, file_name: str) -> str:
    """The upload's declared media type when it is a well-formed one, else a guess from its name."""
    declared = (upload.mimetype or "").lower()
    if declared != "application/octet-stream" and MEDIA_TYPE.fullmatch(declared):
        return declared
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"
