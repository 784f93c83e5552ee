"""Pack what ``benchmarks/gpu_check.sh`` needs on a GPU machine that has no network and no copy of the data.

Usage (here, where ../shared/data and the packaged MiniLM model are):
    .venv/bin/python benchmarks/gpu_prepare.py --out .gpu

Writes into ``--out`` (a folder git ignores; nothing of it is committed):
- ``data.tar.gz``: FB15k-237's triples and the IMDB CSV with ``magnn_processed/``, laid out as the shared data
  folder (``kg/FB15k-237``, ``mmhn/IMDB``), for ``IMF_KG_SHARED_DATA``;
- ``fb_text.npy`` + ``fb_text_ids.txt``: the MiniLM encodings of FB15k-237's ``entity_text.tsv`` that
  ``imf-kg train`` computes (``data.features`` / ``data.feature_ids`` read them), so the GPU run uses the same
  text features without the 88 MB model; ``umls_text.npy`` + ``umls_text_ids.txt`` likewise for ``make run``
  (UMLS entity names);
- ``imdb_text.npz``: the MiniLM encodings of the IMDB movie texts, for ``data_options.text_encoder``
  (:func:`node_tasks.imdb.save_text_features`).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from node_tasks.data import default_data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".gpu"))
    parser.add_argument("--data", default=str(default_data_root()))
    args = parser.parse_args(argv)
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)

    with tarfile.open(out / "data.tar.gz", "w:gz") as tar:
        for name in ("train.txt", "valid.txt", "test.txt"):
            tar.add(data / "kg" / "FB15k-237" / name, arcname=f"kg/FB15k-237/{name}")
        tar.add(data / "mmhn" / "IMDB", arcname="mmhn/IMDB")

    from imf_kg.experiment import DataConfig, ExperimentConfig, prepare_data
    from imf_kg.models.imf import IMFConfig

    # the text features imf-kg train computes, as a matrix + id file that data.features / data.feature_ids read
    for stem, dataset, text in (("fb", str(data / "kg" / "FB15k-237"), "entity_text"),
                                ("umls", "umls", "names")):  # umls: make run's data, entity names through MiniLM
        cfg = ExperimentConfig(data=DataConfig(dataset=dataset, text=text),
                               model=IMFConfig(modalities=("structure", "text")))
        kg = prepare_data(cfg, device="cpu", progress=False)
        features = kg.features["text"]
        rows = features.mask.nonzero().flatten()
        np.save(out / f"{stem}_text.npy", features.values[rows].numpy().astype(np.float32))
        names = "".join(kg.entity_names[int(i)] + "\n" for i in rows)
        (out / f"{stem}_text_ids.txt").write_text(names, encoding="utf-8")

    from imf_kg.encoders.text import encode_texts
    from node_tasks.imdb import movie_texts, read_movies, save_text_features

    movies, _ = read_movies(data / "mmhn" / "IMDB" / "movie_metadata.csv", "regnn")
    texts = movie_texts(movies)
    encoded = encode_texts(texts, progress=False)
    save_text_features(out / "imdb_text.npz", texts, encoded.values, encoded.mask)
    for path in sorted(out.iterdir()):
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
