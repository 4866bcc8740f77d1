"""Peer for the catalog benchmark: a FastAPI app serving product pages from memory.

It loads a JSON array of product documents, the exact bodies hexmarket's
`GET /api/v1/products/{id}` returned (the bench script fetches them and writes the file), and
serves them back unchanged:

    GET /api/v1/products/{id}   the stored body, 404 when unknown
    GET /api/v1/products?q=     case-insensitive substring match over titles, first 20, as
                                {"items": [...], "total": n} like hexmarket's search
    GET /health

The search is deliberately naive (a linear scan): the point is a comparable request, not
equal features. One uvicorn worker, no access log, uvloop and httptools when installed.

Usage: python3 catalog_app.py PRODUCTS.json [--host 127.0.0.1] [--port 18282]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

SEARCH_LIMIT = 20
# The fields of a hexmarket search hit that a product page also carries.
HIT_FIELDS = (
    "id",
    "title",
    "vendor_id",
    "vendor_name",
    "category_id",
    "price",
    "available",
    "rating",
    "visibility",
    "thumbnail_key",
    "created_at",
)


def load_products(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        products = json.load(f)
    if not isinstance(products, list) or not all(
        isinstance(p, dict) and isinstance(p.get("id"), str) for p in products
    ):
        raise SystemExit(f"{path}: expected a JSON array of objects with a string \"id\"")
    return products


def create_app(products: list[dict[str, Any]]) -> FastAPI:
    by_id = {p["id"]: p for p in products}
    # Lower-cased once here rather than per request.
    searchable = [
        (str(p.get("title", "")).casefold(), {k: p[k] for k in HIT_FIELDS if k in p})
        for p in products
    ]

    app = FastAPI(title="catalog peer", openapi_url=None, docs_url=None, redoc_url=None)

    # Return types are annotated so FastAPI serialises through Pydantic straight to JSON bytes
    # (its fast path since ORJSONResponse was deprecated).
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/products/{product_id}")
    async def get_product(product_id: str) -> dict[str, Any]:
        product = by_id.get(product_id)
        if product is None:
            raise HTTPException(status_code=404, detail="product not found")
        return product

    @app.get("/api/v1/products")
    async def search(q: str = "") -> dict[str, Any]:
        needle = q.casefold()
        items = []
        total = 0
        for title, hit in searchable:
            if needle in title:
                total += 1
                if len(items) < SEARCH_LIMIT:
                    items.append(hit)
        return {"items": items, "total": total}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("products", help="JSON array of product page bodies")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18282)
    args = parser.parse_args()

    products = load_products(args.products)
    print(f"catalog peer: {len(products)} products", file=sys.stderr)
    uvicorn.run(
        create_app(products),
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_level="warning",
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
    )


if __name__ == "__main__":
    main()
