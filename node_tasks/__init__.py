"""Node classification in multimodal heterogeneous networks (HGNN-IMA, Li et al., IJCAI 2025).

Data side: :mod:`node_tasks.data` (the ``HeteroData`` contract, :func:`validate_hetero`, :func:`describe_hetero`,
:func:`load_dataset`, the HGNN-IMA release-layout loader), :mod:`node_tasks.imdb` (IMDB from the CSV, MAGNN's
preprocessing) and :mod:`node_tasks.synthetic` (the planted benchmark). Names below are imported lazily so
that ``import node_tasks`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_hetero": "node_tasks.data",
    "describe_hetero": "node_tasks.data",
    "load_dataset": "node_tasks.data",
    "load_hgnn_ima_release": "node_tasks.data",
    "stratified_split": "node_tasks.data",
    "validate_hetero": "node_tasks.data",
    "load_imdb": "node_tasks.imdb",
    "make_synthetic": "node_tasks.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'node_tasks' has no attribute {name!r}")
