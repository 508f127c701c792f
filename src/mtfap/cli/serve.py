"""``mtfap serve``: a local web page for your photos and your index.

Drop a photo on the page: each face is boxed, with its 40 attribute bars; click an attribute
to see its activation map over the face. With --db, a search box over the index shows the
matching faces as thumbnails ("old man wearing glasses"), and each face of a photo can be
looked for by its attributes or its person. The JSON API behind the page (POST /predict,
GET /search, /map, /similar, /thumbnail) is described at /openapi.json.

The server answers this machine only (127.0.0.1) unless --host says otherwise; uploads are
kept in memory, never on disk, within --max-upload-mb and --max-pixels.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from mtfap.cli.arguments import add_image_arguments, count


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="a local web page: attributes of your photos, search over an index",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--db", default=None, help="the index to search (`mtfap index`)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but a loopback address lets other "
                             "machines see your photos")
    parser.add_argument("--port", type=count(1), default=8000, help="port")
    parser.add_argument("--model", default=None,
                        help="the model for uploaded photos (default: the index's, else the "
                             "default shipped model)")
    parser.add_argument("--root", type=Path, default=None,
                        help="the collection's folder, when it moved since it was indexed")
    parser.add_argument("--aligned", action="store_true",
                        help="uploaded photos are aligned face crops (no detection)")
    parser.add_argument("--max-upload-mb", type=count(1), default=20,
                        help="largest upload, in megabytes")
    add_image_arguments(parser, skip=False)
    parser.set_defaults(func=run)


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host names to answer: this machine's own names, the address served, and any name
    when serving on every address (0.0.0.0, ::)."""
    from mtfap.applications.web.app import LOCAL_HOSTS

    try:
        if ipaddress.ip_address(host).is_unspecified:
            return ("*",)
    except ValueError:
        pass  # a name, not an address
    return tuple(dict.fromkeys((*LOCAL_HOSTS, host)))


def run(args) -> int:
    import uvicorn

    from mtfap.applications.web import create_app

    app = create_app(args.db, model=args.model, root=args.root, aligned=args.aligned,
                     max_upload_bytes=args.max_upload_mb * 2**20, max_pixels=args.max_pixels,
                     allowed_hosts=allowed_hosts(args.host))
    where = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mtfap serve: http://{where}:{args.port}/ (API: /openapi.json); Ctrl-C stops it",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
