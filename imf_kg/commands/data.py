"""``imf-kg data describe <name-or-folder>``: load a knowledge graph and print what it holds."""

from __future__ import annotations

import argparse
import json

from imf_kg.data.formats import FORMATS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect knowledge-graph datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="action")
    actions.required = True
    describe_parser = actions.add_parser(
        "describe",
        help="entities, relations, triples per split, duplicates, unseen valid/test triples, modality coverage",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    describe_parser.add_argument("source", help="nations, umls, kinships, or a dataset folder")
    describe_parser.add_argument("--format", choices=FORMATS, default=None, help="folder layout (default: detected)")
    describe_parser.add_argument(
        "--unseen", choices=("drop", "error"), default="drop",
        help="valid/test triples with an entity or relation absent from train: drop them or stop",
    )
    describe_parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    describe_parser.set_defaults(func=run_describe)


def run_describe(args) -> int:
    from imf_kg.data.describe import describe, render_description
    from imf_kg.data.loaders import load_kg

    kg = load_kg(args.source, fmt=args.format, unseen=args.unseen)
    summary = describe(kg)
    print(json.dumps(summary, indent=2) if args.json else render_description(summary))
    return 0
