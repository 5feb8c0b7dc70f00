"""`gateway products import <file>` (JSON or YAML; see gateway.catalog.importer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import asyncpg
import orjson
import yaml

from gateway.catalog.importer import CatalogFileError, import_products, load_file, parse_products
from gateway.progress import Progress
from gateway.settings import Settings


def cmd_products_import(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.cli import print_json, with_connection

    path = Path(args.file)
    try:
        rows = parse_products(load_file(path))
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        print(f"{path}: not valid JSON/YAML: {exc}", file=sys.stderr)
        return 1
    except CatalogFileError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return 1
    if args.dry_run:
        print_json({"file": str(path), "products": len(rows), "dry_run": True})
        return 0

    async def job(con: asyncpg.Connection) -> int:
        progress = Progress.for_terminal()
        result = await import_products(con, rows, source=path.name, progress=progress)
        progress.finish(f"imported {len(rows)} products: {result.inserted} new, {result.updated} updated")
        print_json({"file": str(path), "products": len(rows), "inserted": result.inserted, "updated": result.updated})
        return 0

    return with_connection(args, settings, job)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.cli import add_database_option

    products = sub.add_parser("products", help="the product catalog")
    actions = products.add_subparsers(dest="products_command", required=True)
    imp = actions.add_parser("import", help="upsert products by SKU from a JSON or YAML file")
    imp.add_argument("file", help="[{sku, name, unit_amount, currency, stock, active?, stripe_price_id?}]")
    imp.add_argument("--dry-run", action="store_true", help="validate the file, write nothing")
    add_database_option(imp)
    imp.set_defaults(func=cmd_products_import)
