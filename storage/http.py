"""aiohttp routes that let the bot's own web server play the bucket for a `LocalArtifactStore`.

`GET|HEAD /artifacts/{key}?exp=…&op=get&sig=…` streams the file (Range requests and Content-Length included, so
the agent can resume a model download); `PUT …&op=put` streams the body into a temp file under a size cap and
renames it into place when complete. Refusals are plain text that says why: 403 "link expired" /
"invalid signature" / wrong operation, 404 missing, 413 over the cap, 415 wrong Content-Type.
"""

from __future__ import annotations

import asyncio
import mimetypes

from aiohttp import web

from storage.artifacts import OCTET_STREAM, ArtifactTooLarge, InvalidKey
from storage.artifacts_local import LocalArtifactStore
from storage.signing import SignatureRejected

ROUTE = "/artifacts/{key:.+}"
READ_CHUNK_BYTES = 256 * 1024


def add_artifact_routes(app: web.Application, store: LocalArtifactStore) -> None:
    """Serve `store` under /artifacts/ (GET also answers HEAD)."""
    routes = _ArtifactRoutes(store)
    app.router.add_get(ROUTE, routes.get)
    app.router.add_put(ROUTE, routes.put)


class _ArtifactRoutes:
    def __init__(self, store: LocalArtifactStore) -> None:
        self._store = store

    def _authorise(self, request: web.Request) -> str:
        key = request.match_info["key"]
        query = request.query
        try:
            self._store.signer.verify(request.method, key, query.get("exp"), query.get("op"), query.get("sig"))
            self._store.object_path(key)
        except SignatureRejected as exc:
            raise web.HTTPForbidden(text=str(exc)) from None
        except InvalidKey as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return key

    async def get(self, request: web.Request) -> web.StreamResponse:
        key = self._authorise(request)
        path = self._store.object_path(key)
        if not path.is_file():
            raise web.HTTPNotFound(text=f"no artifact at {key!r}")
        self._store.record("GetObject", key)
        # FileResponse streams from disk and implements Range/If-Range, 206/416 and Content-Length.
        return web.FileResponse(path, chunk_size=READ_CHUNK_BYTES, headers={"Content-Type": self._content_type(key)})

    async def put(self, request: web.Request) -> web.StreamResponse:
        key = self._authorise(request)
        # The raw header, not request.content_type: aiohttp defaults a missing header to octet-stream, while
        # S3 refuses an upload whose signed Content-Type is absent.
        sent = request.headers.get("Content-Type")
        if sent is None or sent.split(";")[0].strip().lower() != OCTET_STREAM:
            raise web.HTTPUnsupportedMediaType(
                text=f"uploads must be sent with Content-Type: {OCTET_STREAM}, got {sent!r}"
            )
        cap = self._store.max_put_bytes
        if request.content_length is not None and request.content_length > cap:
            # Refuse before reading a byte when the client says up front that it is too big.
            raise _too_large(cap, f"{request.content_length} bytes announced")
        with self._store.begin_upload(key, max_bytes=cap) as upload:
            try:
                async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                    await asyncio.to_thread(upload.write, chunk)
            except ArtifactTooLarge:
                raise _too_large(cap, "cut off while receiving") from None
            info = await asyncio.to_thread(upload.commit)
        return web.Response(status=200, headers={"ETag": f'"{info.sha256}"', "x-lorabot-sha256": str(info.sha256)})

    def _content_type(self, key: str) -> str:
        # Pods upload everything as octet-stream; guess from the name so a sample PNG opens inline in a browser.
        stored = self._store.stored_content_type(key)
        if stored != OCTET_STREAM:
            return stored
        return mimetypes.guess_type(key)[0] or OCTET_STREAM


def _too_large(cap: int, detail: str) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=cap, actual_size=0, text=f"upload too large: the limit is {cap} bytes ({detail})"
    )
