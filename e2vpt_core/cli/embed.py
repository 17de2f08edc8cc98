"""`e2vpt embed RUN`: the Poincaré-disk view of a run, its figures, and the stored coordinates.

The engine is imported inside the handler, so registering the command costs nothing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import add_json_argument, add_store_argument


def register(subparsers: Any) -> None:
    """Add the `embed` command to the `e2vpt` parser."""
    parser = subparsers.add_parser(
        "embed", help="hyperbolic (Poincaré-disk) embedding view of a run",
        description="Extract a run's CLS embeddings, fit the hyperbolic head, project to the "
                    "Poincaré disk with UMAP, print class-separability figures and store the "
                    "disk coordinates in the run directory.")
    parser.add_argument("run", help="id of a completed run (see `e2vpt runs`)")
    parser.add_argument("--split", default="test",
                        help="split whose images are embedded and drawn (train, val, test)")
    add_store_argument(parser)
    parser.add_argument("--max-points", type=int, default=2000,
                        help="seeded subset of the split (0: all points)")
    parser.add_argument("--head-split", default=None,
                        help="split the head is trained on (default: the run's training split)")
    parser.add_argument("--head-steps", type=int, default=50,
                        help="training steps of the hyperbolic head")
    parser.add_argument("--head-lr", type=float, default=3e-5,
                        help="learning rate of the hyperbolic head")
    parser.add_argument("--curvature", type=float, default=0.1,
                        help="curvature of the hyperbolic head's Poincaré ball")
    parser.add_argument("--umap-epochs", type=int, default=200,
                        help="UMAP optimisation epochs")
    parser.add_argument("--neighbors", type=int, default=15, help="UMAP's n_neighbors")
    parser.add_argument("--seed", type=int, default=0, help="head, UMAP and subset seed")
    parser.add_argument("--device", default="auto", help="for the embedding extraction")
    parser.add_argument("--refresh", action="store_true", help="recompute, ignoring the cache")
    add_json_argument(parser, "the separability summary")
    parser.set_defaults(handler=_embed)


def _embed(args: argparse.Namespace) -> int:
    from ..hyperbolic.head import HeadConfig
    from ..hyperbolic.projection import ProjectionConfig
    from ..hyperbolic.view import embedding_view
    from ..store import RunStore

    head = HeadConfig(steps=args.head_steps, lr=args.head_lr, curvature=args.curvature,
                      seed=args.seed)
    projection = ProjectionConfig(n_epochs=args.umap_epochs, n_neighbors=args.neighbors,
                                  random_state=args.seed)
    view = embedding_view(
        RunStore(args.store), args.run, args.split, head=head, projection=projection,
        max_points=args.max_points, head_split=args.head_split, sample_seed=args.seed,
        device=args.device, refresh=args.refresh)
    summary = view.summary()
    source = "cached" if view.cached else "computed"
    print(f"run {args.run} {view.split}: {summary['num_points']} points, "
          f"{summary['num_classes']} classes ({source}, {summary['total_seconds']:.1f} s)")
    print(view.table.to_string(float_format=lambda value: f"{value:.4f}"))
    print(f"disk coordinates: {args.store}/{args.run}/poincare_{view.split}_"
          f"{view.settings_hash}.safetensors")
    if args.json:
        print(json.dumps(summary))
    return 0
