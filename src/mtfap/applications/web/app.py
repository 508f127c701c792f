"""The local web page and its JSON API (``mtfap serve``), a FastAPI application.

Safe by construction:

- a request body (an uploaded photo) is read into memory up to a size limit and never written
  to disk; whether it is an image is decided by the decoder (``mtfap.data.decode``), which also
  enforces the pixel limit, never by its name or declared type;
- no request parameter names a file: thumbnails are asked for by face id and cut from the file
  the index holds for that face; activation maps by the random token of an upload, whose
  aligned faces (not the photo) are kept in memory for the last few uploads;
- only requests for this machine's own names are answered (``Host`` checked), so a web page
  elsewhere cannot reach the server through DNS rebinding; the page loads nothing from
  elsewhere (inline CSS and JS, a Content-Security-Policy that forbids other origins).

The model is shared by all requests behind one lock (Grad-CAM changes its gradients).
"""

from __future__ import annotations

import io
import math
import secrets
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mtfap.applications.analyze import Analyzer, FaceResult
from mtfap.applications.cam import MAP_KINDS, overlay, predictor_maps
from mtfap.applications.face_search import FaceSearch, Hit
from mtfap.model.shipped import default_model_name
from mtfap.data.decode import decode_image, max_pixels_limit
from mtfap.errors import DataError
from mtfap.version import __version__

MAX_UPLOAD_BYTES = 20 * 2**20
UPLOADS_KEPT = 16  # uploads whose aligned faces stay in memory for maps and "similar" searches
UPLOAD_MEMORY_BYTES = 64 * 2**20  # and at most this many bytes of them
THUMBNAILS_KEPT = 512
MAX_LIMIT = 200
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' blob: data:; "
                               "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# -- what the API returns (these models are its OpenAPI description) ---------------------------

class IndexInfo(BaseModel):
    faces: int
    files: int
    unreadable: int
    framing: str | None
    person_search: bool


class Info(BaseModel):
    version: str
    model: str
    model_version: str
    attributes: list[str]
    index: IndexInfo | None
    max_upload_bytes: int
    max_pixels: int


class FaceOut(BaseModel):
    face: int
    box: list[float]
    score: float | None
    detector: str
    landmarks: list[list[float]]
    probabilities: dict[str, float]
    decisions: dict[str, bool]


class Prediction(BaseModel):
    token: str
    width: int
    height: int
    model: str
    model_version: str
    faces: list[FaceOut]


class HitOut(BaseModel):
    rank: int
    face_id: int
    path: str
    face: int
    box: list[float]
    value: float
    probability: float | None = None
    probabilities: dict[str, float]
    thumbnail: str


class SearchResult(BaseModel):
    query: str | None
    value: Literal["log_probability", "l1_distance", "distance"]
    faces_in_index: int
    hits: list[HitOut]


# -- uploads kept in memory ----------------------------------------------------------------

@dataclass
class Upload:
    faces: list[FaceResult]  # with their aligned images (keep_aligned)

    @property
    def nbytes(self) -> int:
        return sum(face.aligned.nbytes for face in self.faces if face.aligned is not None)


class UploadMemory:
    """The last uploads by random token, least recently used out first, within a count and a
    byte budget."""

    def __init__(self, count: int = UPLOADS_KEPT, max_bytes: int = UPLOAD_MEMORY_BYTES):
        self.count, self.max_bytes = count, max_bytes
        self._uploads: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, upload: Upload) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._uploads[token] = upload
            while self._uploads and (len(self._uploads) > self.count or sum(
                    u.nbytes for u in self._uploads.values()) > self.max_bytes):
                self._uploads.popitem(last=False)
        return token

    def face(self, token: str, face: int) -> FaceResult:
        with self._lock:
            upload = self._uploads.get(token)
            if upload is not None:
                self._uploads.move_to_end(token)
        if upload is None:
            raise HTTPException(404, "unknown or expired upload token: post the photo to "
                                     "/predict again")
        if not 0 <= face < len(upload.faces):
            raise HTTPException(404, f"the upload has {len(upload.faces)} face(s); there is no "
                                     f"face {face}")
        return upload.faces[face]


# -- the request body ----------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {int(declared):,} bytes; the limit is {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"upload over the limit of {limit:,} bytes")
    return bytes(body)


def uploaded_file(body: bytes, content_type: str, field: str = "image") -> bytes:
    """The bytes of the photo: the ``field`` part of a multipart form (or its only file part),
    or the whole body for any other content type."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        return body
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data without a boundary")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header = {"field": b"", "value": b""}

    def on_part_begin():
        parts.append(({}, bytearray()))

    def on_header_field(data, start, end):
        header["field"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        parts[-1][0][header["field"].lower()] = header["value"]
        header["field"], header["value"] = b"", b""

    def on_part_data(data, start, end):
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - the parser's errors have no common base
        raise HTTPException(400, f"malformed multipart body ({exc})") from None
    files = []
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == field.encode():
            return bytes(data)
        if b"filename" in disposition:
            files.append(bytes(data))
    if len(files) == 1:
        return files[0]
    raise HTTPException(400, f"no '{field}' file in the form: send the photo as the form "
                             f"field '{field}'")


def too_many_pixels(data: bytes, limit: int) -> bool:
    """Whether the image header of ``data`` claims more than ``limit`` pixels (the decoder has
    refused it; this tells 413 from 415)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as header:
                return header.width * header.height > limit
        except Image.DecompressionBombError:
            return True
        except Exception:  # noqa: BLE001 - not an image at all: the decoder said why
            return False


# -- the application -------------------------------------------------------------------------

def _png(image: np.ndarray | Image.Image) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def _face_out(face: FaceResult) -> FaceOut:
    record = face.to_record()
    return FaceOut(face=record["face"], box=record["box"], score=record["score"],
                   detector=record["detector"], landmarks=record["landmarks"],
                   probabilities=record["probabilities"], decisions=record["decisions"])


def _hit_out(hit: Hit, attributes: list[str], shown, kind: str) -> HitOut:
    record = hit.record(attributes, shown)
    return HitOut(**record, thumbnail=f"/thumbnail/{hit.face_id}",
                  probability=math.exp(hit.value) if kind == "log_probability" else None)


class WebService:
    """What the page and the API do, apart from HTTP: the model for uploads, the index, the
    uploads kept in memory and a cache of thumbnails. Its methods raise ``HTTPException`` with
    the status and one-line reason of each refusal."""

    def __init__(self, db=None, *, model=None, root=None, aligned: bool = False,
                 max_pixels: int | None = None):
        self.max_pixels = max_pixels_limit(max_pixels)
        self.index = (FaceSearch(db, root=root, max_pixels=self.max_pixels)
                      if db is not None else None)
        options = {"aligned": aligned, "keep_aligned": True, "max_pixels": self.max_pixels,
                   "workers": 1}
        if self.index is not None:
            self.person_search = self.index.descriptor_dim > 0 and not aligned
            self.analyzer = self.index.analyzer(model, identity=self.person_search, **options)
        else:
            self.person_search = False
            self.analyzer = Analyzer(model or default_model_name(), **options)
        self.predictor = self.analyzer.predictor
        self.attributes = list(self.predictor.attributes)
        self.uploads = UploadMemory()
        self._model_lock = threading.Lock()  # Grad-CAM changes the model's gradients
        self._thumbnails: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumbnails_lock = threading.Lock()

    def _need_index(self) -> FaceSearch:
        if self.index is None:
            raise HTTPException(404, "this server has no index: start it with "
                                     "mtfap serve --db photos.db")
        return self.index

    def info(self, max_upload_bytes: int) -> Info:
        index = None
        if self.index is not None:
            counts = self.index.counts()
            index = IndexInfo(faces=counts["faces"], files=counts["files"],
                              unreadable=counts["errors"], framing=self.index.framing,
                              person_search=self.person_search)
        return Info(version=__version__, model=self.predictor.name,
                    model_version=self.predictor.version, attributes=self.attributes,
                    index=index, max_upload_bytes=max_upload_bytes, max_pixels=self.max_pixels)

    def predict(self, data: bytes) -> Prediction:
        try:
            image = decode_image(data, "upload", max_pixels=self.max_pixels)
        except DataError as exc:
            status = 413 if too_many_pixels(data, self.max_pixels) else 415
            raise HTTPException(status, str(exc)) from None
        with self._model_lock:
            result = self.analyzer.analyze_image(np.asarray(image), file="upload")
        token = self.uploads.add(Upload(result.faces))
        return Prediction(token=token, width=image.width, height=image.height,
                          model=self.predictor.name, model_version=self.predictor.version,
                          faces=[_face_out(face) for face in result.faces])

    def activation_map(self, token: str, face: int, attribute: str, kind: str) -> bytes:
        """PNG of the map of ``attribute`` over the face as the network saw it."""
        if kind not in MAP_KINDS:
            raise HTTPException(400, f"map kind must be one of {', '.join(MAP_KINDS)}")
        if attribute not in self.attributes:
            raise HTTPException(400, f"unknown attribute {attribute!r}; the model predicts: "
                                     f"{', '.join(self.attributes)}")
        found = self.uploads.face(token, face)
        with self._model_lock:
            views, maps = predictor_maps(self.predictor, [found.aligned], [attribute], kind)
        return _png((overlay(views[0], maps[0, 0]) * 255).round().astype(np.uint8))

    def search(self, text: str, limit: int) -> SearchResult:
        index = self._need_index()
        try:
            query, hits = index.query(text, limit)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        shown = list(query.as_dict())
        return SearchResult(query=str(query), value="log_probability",
                            faces_in_index=index.counts()["faces"],
                            hits=[_hit_out(h, index.attributes, shown, "log_probability")
                                  for h in hits])

    def similar(self, token: str, face: int, by: str, limit: int) -> SearchResult:
        index = self._need_index()
        found = self.uploads.face(token, face)
        if by == "person":
            if found.descriptor is None:
                raise HTTPException(400, "this index or upload has no identity descriptors "
                                         "(indexed with --aligned or --no-identity)")
            hits, kind = index.person(found.descriptor, limit), "distance"
        else:
            hits, kind = index.like(found.probabilities, limit), "l1_distance"
        return SearchResult(query=None, value=kind, faces_in_index=index.counts()["faces"],
                            hits=[_hit_out(h, index.attributes, [], kind) for h in hits])

    def thumbnail(self, face_id: int, size: int) -> bytes:
        """JPEG of an indexed face, from a cache that a change of the index empties."""
        index = self._need_index()
        key = (face_id, size, index.data_version())
        with self._thumbnails_lock:
            data = self._thumbnails.get(key)
        if data is None:
            try:
                data = _jpeg(index.thumbnail(face_id, size))
            except KeyError:
                raise HTTPException(404, f"no face {face_id} in the index") from None
            except DataError as exc:
                raise HTTPException(404, str(exc)) from None
            with self._thumbnails_lock:
                self._thumbnails[key] = data
                while len(self._thumbnails) > THUMBNAILS_KEPT:
                    self._thumbnails.popitem(last=False)
        return data


def create_app(db: str | Path | None = None, *, model=None, root: str | Path | None = None,
               aligned: bool = False, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int | None = None, allowed_hosts=LOCAL_HOSTS) -> FastAPI:
    """The application: the page at ``/`` and the JSON API described at ``/openapi.json``.

    Parameters
    ----------
    db : the index to search (``mtfap index``); None serves predictions and maps only.
    model : the model for uploads; default the index's model, else the default shipped one.
    root : the collection's folder for thumbnails, when it moved since it was indexed.
    aligned : uploads are aligned face crops framed like the model's training images.
    max_upload_bytes, max_pixels : limits on an uploaded photo (bytes of the request body;
        pixels, ``mtfap.data.decode``'s limit by default).
    allowed_hosts : the ``Host`` names answered; ``("*",)`` for any.
    """
    service = WebService(db, model=model, root=root, aligned=aligned, max_pixels=max_pixels)
    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN; the description is
    # /openapi.json, which any OpenAPI viewer reads
    app = FastAPI(title="mtfap", version=__version__, docs_url=None, redoc_url=None,
                  description="Face attributes of your photos and search over an attribute "
                              "index of a photo collection (docs/SEARCH.md).")
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("mtfap.applications.web").joinpath("index.html")
        return HTMLResponse(html.read_text(encoding="utf-8"))

    @app.get("/info", response_model=Info, summary="The model, the index and the limits")
    def info() -> Info:
        return service.info(max_upload_bytes)

    @app.post("/predict", response_model=Prediction,
              summary="The faces of an uploaded photo, each with its 40 attribute probabilities",
              description=f"Send the photo as the multipart form field `image` (or as the raw "
                          f"body). At most {max_upload_bytes:,} bytes and "
                          f"{service.max_pixels:,} pixels; any image format the decoder reads. "
                          f"The returned `token` names the upload for `/map` and `/similar` "
                          f"while it is among the last {UPLOADS_KEPT} uploads.",
              responses={413: {"description": "too many bytes or pixels"},
                         415: {"description": "not an image"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["image"],
                      "properties": {"image": {"type": "string", "format": "binary"}}}},
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def predict(request: Request) -> Prediction:
        body = await read_body(request, max_upload_bytes)
        data = uploaded_file(body, request.headers.get("content-type", ""))
        return await run_in_threadpool(service.predict, data)

    @app.get("/map", response_class=Response,
             summary="Activation map of one attribute over one face of an upload (PNG)",
             responses={200: {"content": {"image/png": {}}}})
    def activation_map(token: str = Query(..., max_length=64), face: int = Query(0, ge=0),
                       attribute: str = Query(..., max_length=64),
                       kind: str = Query("hirescam", description=", ".join(MAP_KINDS))
                       ) -> Response:
        return Response(service.activation_map(token, face, attribute, kind),
                        media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @app.get("/search", response_model=SearchResult,
             summary="Faces of the index that match a query, best first",
             description="The query language of docs/SEARCH.md: words with synonyms and "
                         "negations (`old man wearing glasses`, `woman without a hat`) or the "
                         "explicit form (`Male & ~Young & Eyeglasses`). A malformed query gets "
                         "400 with a one-line reason.")
    def search(q: str = Query(..., max_length=500, description="the query"),
               limit: int = Query(20, ge=1, le=MAX_LIMIT)) -> SearchResult:
        return service.search(q, limit)

    @app.get("/similar", response_model=SearchResult,
             summary="Faces of the index like a face of an upload: by attributes or by person")
    def similar(token: str = Query(..., max_length=64), face: int = Query(0, ge=0),
                by: Literal["attributes", "person"] = "attributes",
                limit: int = Query(20, ge=1, le=MAX_LIMIT)) -> SearchResult:
        return service.similar(token, face, by, limit)

    @app.get("/thumbnail/{face_id}", response_class=Response,
             summary="A face of the index, cut from its photo (JPEG)",
             responses={200: {"content": {"image/jpeg": {}}},
                        404: {"description": "no such face, or its photo is gone or changed"}})
    def thumbnail(face_id: int, size: int = Query(160, ge=32, le=512)) -> Response:
        return Response(service.thumbnail(face_id, size), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60"})

    return app
