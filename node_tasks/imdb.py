"""IMDB movie / director / actor network from ``movie_metadata.csv`` (the IMDB-5000 Kaggle table).

Graph, labels and keyword features follow the MAGNN preprocessing (Fu et al., WWW 2020,
``preprocess_IMDB.ipynb``) that HGNN-IMA (Li et al., IJCAI 2025; spec 1.1) reuses:

- Movies are kept in CSV order after dropping rows that lack a director or actors (``drop_rule``, below),
  then rows whose ``genres`` contain none of Action, Comedy, Drama. The label is the FIRST of those three
  genres in the pipe-separated ``genres`` string (0 Action, 1 Comedy, 2 Drama).
- Directors and actors (``actor_1/2/3_name``) are the distinct names of the kept movies, sorted.
- ``drop_rule="regnn"`` (default) drops movies missing any of director, actor_1, actor_2, actor_3: 4,274
  movies, 2,079 directors, 5,252 actors, exactly the ``magnn_processed`` files shipped in shared/data (made
  by RE-GNN's copy of the notebook). ``drop_rule="magnn"`` drops only rows missing director or actor_1, as in
  MAGNN's original notebook: 4,278 / 2,081 / 5,257, the counts in the HGNN-IMA code comments.
- ``keywords`` modality: MAGNN's bag of words of ``plot_keywords`` (sklearn ``CountVectorizer(min_df=2)``:
  lower-cased tokens of >= 2 word characters kept when they occur in >= 2 movies, vocabulary sorted, raw
  counts), re-implemented here so the toolkit does not need scikit-learn; directors and actors get the mean
  of their movies' vectors (MAGNN's choice).

Beyond MAGNN (HGNN-IMA has poster images for movies, which are not available here):

- ``text`` modality, movies only: "<title>. Plot keywords: <k1>, <k2>, ..." through a frozen sentence encoder
  (:func:`imf_kg.encoders.text.encode_texts` by default). Directors and actors have no text: a person's name
  says nothing about genre, and encoding it would only add name-similarity noise; like HGNN-IMA's images,
  text is a modality that only movies have (so the attention loss L_att has something to penalise).
- ``numeric`` modality, movies only: :data:`NUMERIC_COLUMNS`, heavy-tailed ones through log1p, standardised
  with the mean/std of the TRAINING movies (``numeric_stats="train"``; ``"all"`` uses every movie, the usual
  transductive choice). A missing value becomes 0 (the training mean) and an indicator column records it;
  a movie has the modality (mask True) when at least one column is present.
- Split: ``split="magnn"`` reads ``magnn_processed/train_val_test_idx.npz`` (396 / 400 / 3,478) when the movie
  list built here matches ``magnn_processed/labels.npy`` node for node; otherwise (e.g. ``drop_rule="magnn"``)
  it falls back to a seeded stratified split with 400 validation and 3,478 test movies, and says so in
  ``data.notes``. ``split="random"`` always uses the seeded stratified split.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

from imf_kg.errors import ConfigError, DataFormatError, ToolkitError
from node_tasks.data import build_hetero, stratified_split

CLASS_NAMES = ("Action", "Comedy", "Drama")
ACTOR_COLUMNS = ("actor_1_name", "actor_2_name", "actor_3_name")
DROP_RULES = {"regnn": ("director_name",) + ACTOR_COLUMNS, "magnn": ("director_name", "actor_1_name")}
LOG_COLUMNS = ("budget", "gross", "num_voted_users", "num_critic_for_reviews", "num_user_for_reviews",
               "movie_facebook_likes", "cast_total_facebook_likes", "director_facebook_likes",
               "actor_1_facebook_likes", "actor_2_facebook_likes", "actor_3_facebook_likes")
NUMERIC_COLUMNS = ("duration", "title_year", "imdb_score", "aspect_ratio", "facenumber_in_poster") + LOG_COLUMNS
MODALITIES = ("text", "numeric", "keywords")
MAGNN_VAL_SIZE, MAGNN_TEST_SIZE = 400, 3478
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # CountVectorizer's default token_pattern
REQUIRED_COLUMNS = ("movie_title", "genres", "plot_keywords") + ACTOR_COLUMNS + ("director_name",)


def _read_csv(csv_path: Path):
    """pandas.read_csv with its decode, empty-file and tokenizer errors as one DataFormatError line."""

    import pandas as pd

    raw = csv_path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFormatError(csv_path, line, f"byte 0x{raw[err.start]:02x}, not UTF-8", "a UTF-8 CSV file") from None
    try:
        return pd.read_csv(csv_path, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataFormatError(csv_path, 1, "an empty file", "the IMDB-5000 movie_metadata.csv with a header") from None
    except (pd.errors.ParserError, ValueError) as err:
        text = " ".join(str(err).split())
        match = re.search(r"(?:row|line) (\d+)", text)
        line = int(match.group(1)) + (1 if "row" in match.group(0) else 0) if match else None
        raise DataFormatError(csv_path, line, f"malformed CSV ({text[:70]})",
                              "comma-separated rows with balanced quotes") from None


def read_movies(csv_path: str | Path, drop_rule: str = "regnn"):
    """The kept movies (a pandas DataFrame, CSV order) and their labels ``(n,)`` int64 (0/1/2).

    Raises:
        DataFormatError: when the file lacks a required column.
    """
    import pandas as pd

    if drop_rule not in DROP_RULES:
        raise ConfigError(f"drop_rule={drop_rule!r}; expected one of {list(DROP_RULES)}")
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ToolkitError(f"{csv_path}: no such file; expected the IMDB-5000 movie_metadata.csv")
    movies = _read_csv(Path(csv_path))
    missing = [c for c in REQUIRED_COLUMNS + NUMERIC_COLUMNS if c not in movies.columns]
    if missing:
        raise DataFormatError(csv_path, 1, f"header without {', '.join(missing)}",
                              "the IMDB-5000 movie_metadata.csv columns")
    movies = movies.dropna(subset=list(DROP_RULES[drop_rule])).reset_index(drop=True)
    labels = np.array([genre_label(g) for g in movies["genres"].fillna("")], dtype=np.int64)
    keep = labels >= 0
    return movies[keep].reset_index(drop=True), labels[keep]


def genre_label(genres: str) -> int:
    """MAGNN's rule: the first of Action / Comedy / Drama in the pipe-separated genres, else -1."""
    for genre in genres.split("|"):
        if genre in CLASS_NAMES:
            return CLASS_NAMES.index(genre)
    return -1


def people(movies) -> tuple[list[str], list[str]]:
    """Sorted distinct director names and actor names of the kept movies."""
    directors = sorted(set(movies["director_name"].dropna()))
    actors = sorted(set().union(*(set(movies[c].dropna()) for c in ACTOR_COLUMNS)))
    return directors, actors


def movie_person_edges(movies, names: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """``(2, E)`` movie -> person edges (deduplicated by :func:`node_tasks.data.build_hetero`)."""
    index = {name: i for i, name in enumerate(names)}
    src, dst = [], []
    for column in columns:
        for movie, name in enumerate(movies[column]):
            if isinstance(name, str) and name in index:
                src.append(movie)
                dst.append(index[name])
    return np.array([src, dst], dtype=np.int64)


def keyword_bag(keywords: Sequence[str | float], min_df: int = 2) -> tuple[sp.csr_matrix, list[str]]:
    """MAGNN's movie keyword features: ``(n_movies, vocab)`` counts and the sorted vocabulary.

    Equivalent to ``CountVectorizer(min_df=min_df).fit_transform(keywords)`` (missing -> empty text).
    """
    documents = [TOKEN.findall(k.lower()) if isinstance(k, str) else [] for k in keywords]
    document_frequency: dict[str, int] = {}
    for tokens in documents:
        for token in set(tokens):
            document_frequency[token] = document_frequency.get(token, 0) + 1
    vocabulary = sorted(t for t, df in document_frequency.items() if df >= min_df)
    column = {t: j for j, t in enumerate(vocabulary)}
    rows, cols = [], []
    for i, tokens in enumerate(documents):
        for token in tokens:
            if token in column:
                rows.append(i)
                cols.append(column[token])
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(documents), len(vocabulary)))
    counts.sum_duplicates()
    return counts, vocabulary


def _mean_over_movies(edges: np.ndarray, num_people: int, num_movies: int) -> sp.csr_matrix:
    """``(num_people, num_movies)``: row p holds 1/deg(p) at each movie linked to p (duplicate edges once)."""
    pairs = np.unique(edges.T, axis=0) if edges.size else np.zeros((0, 2), dtype=np.int64)
    incidence = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 1], pairs[:, 0])), shape=(num_people, num_movies))
    degree = np.asarray(incidence.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(degree, 1)) @ incidence


def person_keyword_means(movie_bag: sp.csr_matrix, edges: np.ndarray, num_people: int) -> sp.csr_matrix:
    """Each person's keyword vector = mean of the vectors of the movies they are linked to (MAGNN)."""
    return _mean_over_movies(edges, num_people, movie_bag.shape[0]) @ movie_bag


def person_text_means(values: torch.Tensor, mask: torch.Tensor, edges: np.ndarray,
                      num_people: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each person's text features = mean over their movies that HAVE text; mask: at least one such movie."""
    mean = _mean_over_movies(edges, num_people, len(values))
    present = sp.csr_matrix(mask.numpy()[:, None].astype(np.float64))
    share = np.asarray((mean @ present).todense()).ravel()  # fraction of the person's movies with text
    summed = mean @ sp.csr_matrix((values * mask.unsqueeze(-1).to(values.dtype)).numpy())
    features = np.asarray(summed.todense()) / np.maximum(share, 1e-12)[:, None]
    return torch.as_tensor(features, dtype=torch.float32), torch.as_tensor(share > 0)


def numeric_features(movies, train_rows: np.ndarray, stats: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(n, 2 * len(NUMERIC_COLUMNS))`` standardised values + missing indicators, and the ``(n,)`` mask.

    Heavy-tailed columns (:data:`LOG_COLUMNS`) pass through log1p(max(x, 0)) first. Mean and std come from
    ``train_rows`` (``stats="train"``) or every movie (``"all"``), over present values only.
    """
    if stats not in ("train", "all"):
        raise ConfigError(f"numeric_stats={stats!r}; expected 'train' or 'all'")
    raw = movies[list(NUMERIC_COLUMNS)].to_numpy(dtype=np.float64)
    for j, column in enumerate(NUMERIC_COLUMNS):
        if column in LOG_COLUMNS:
            raw[:, j] = np.log1p(np.maximum(raw[:, j], 0.0))
    present = ~np.isnan(raw)
    reference = raw[train_rows] if stats == "train" else raw
    mean = np.nanmean(np.where(np.isnan(reference), np.nan, reference), axis=0)
    std = np.nanstd(reference, axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.nan_to_num(std) > 0, np.nan_to_num(std), 1.0)
    values = np.where(present, (raw - mean) / std, 0.0)
    return np.hstack([values, (~present).astype(np.float64)]).astype(np.float32), present.any(axis=1)


def movie_texts(movies) -> list[str]:
    """"<title>. Plot keywords: k1, k2, ..." per movie (the title's trailing non-breaking space removed)."""
    texts = []
    for title, keywords in zip(movies["movie_title"], movies["plot_keywords"]):
        title = str(title).replace("\xa0", " ").strip()
        words = ", ".join(keywords.split("|")) if isinstance(keywords, str) else ""
        texts.append(f"{title}. Plot keywords: {words}" if words else title)
    return texts


def save_text_features(path: str | Path, texts: Sequence[str], values, mask=None) -> Path:
    """Write encoded movie texts as an ``.npz`` that ``load_imdb(text_encoder=path)`` reads back.

    For features computed elsewhere (another encoder, or a machine that has the model): arrays ``texts`` (str),
    ``values`` ``(n, dim)`` and ``mask`` ``(n,)``. Written atomically.
    """
    from imf_kg.io import atomic_write_bytes

    values = np.asarray(values, dtype=np.float32)
    mask = np.ones(len(texts), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if values.ndim != 2 or values.shape[0] != len(texts) or mask.shape != (len(texts),):
        raise ToolkitError(f"save_text_features: values {values.shape} and mask {mask.shape} for {len(texts)} texts; "
                           f"expected ({len(texts)}, dim) and ({len(texts)},)")
    buffer = io.BytesIO()
    np.savez(buffer, texts=np.asarray(list(texts), dtype=str), values=values, mask=mask)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_text_features(path: str | Path, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a :func:`save_text_features` file for ``texts``, matched by text (order and extra rows free).

    Raises:
        DataFormatError: unreadable file, missing arrays, or a text the file does not hold (the first is named).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = [str(t) for t in archive["texts"]]
            values, mask = np.asarray(archive["values"]), np.asarray(archive["mask"], dtype=bool)
    except (OSError, ValueError, KeyError) as err:
        raise DataFormatError(path, None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                              "an .npz with arrays texts, values (n, dim) and mask (n,)") from None
    if values.ndim != 2 or len(stored) != values.shape[0] or mask.shape != (len(stored),):
        raise DataFormatError(path, None, f"texts {len(stored)}, values {values.shape}, mask {mask.shape}",
                              "one values row and one mask entry per text")
    row = {text: k for k, text in enumerate(stored)}
    absent = [text for text in texts if text not in row]
    if absent:
        raise DataFormatError(path, None, f"no features for {len(absent)} of {len(texts)} movie texts "
                              f"(first: {absent[0][:60]!r})", "features for every movie text (encode them again)")
    rows = np.fromiter((row[text] for text in texts), dtype=np.int64, count=len(texts))
    return values[rows], mask[rows]


def _encode_text(texts: list[str], text_encoder) -> tuple[torch.Tensor, torch.Tensor]:
    if text_encoder is None or text_encoder == "default":
        from imf_kg.encoders.text import encode_texts

        encoded = encode_texts(texts, progress=False)
    elif callable(text_encoder):
        encoded = text_encoder(texts)
    elif isinstance(text_encoder, (str, Path)) and str(text_encoder).endswith(".npz"):
        values, mask = read_text_features(text_encoder, texts)
        return torch.as_tensor(values).float(), torch.as_tensor(mask)
    else:
        raise ConfigError(f"text_encoder={text_encoder!r}; expected 'default', a features .npz "
                          f"(node_tasks.imdb.save_text_features) or a callable texts -> features")
    if hasattr(encoded, "values") and hasattr(encoded, "mask"):
        values, mask = torch.as_tensor(encoded.values), torch.as_tensor(encoded.mask)
    else:
        values = torch.as_tensor(np.asarray(encoded))
        mask = torch.ones(len(texts), dtype=torch.bool)
    if values.dim() != 2 or values.size(0) != len(texts) or tuple(mask.shape) != (len(texts),):
        raise ToolkitError(f"the text encoder returned values {tuple(values.shape)} and mask {tuple(mask.shape)}; "
                           f"expected ({len(texts)}, dim) and ({len(texts)},)")
    return values.float(), mask.bool()


def _magnn_split(root: Path, labels: np.ndarray) -> dict | None:
    """MAGNN's split when ``magnn_processed`` exists and its labels match ours node for node."""
    folder = root / "magnn_processed"
    if not (folder / "train_val_test_idx.npz").is_file() or not (folder / "labels.npy").is_file():
        return None
    if not np.array_equal(np.load(folder / "labels.npy"), labels):
        return None
    with np.load(folder / "train_val_test_idx.npz") as split:
        return {name: torch.as_tensor(np.sort(split[f"{name}_idx"]), dtype=torch.long)
                for name in ("train", "val", "test")}


def load_imdb(
    root: str | Path,
    text_encoder: str | Callable | None = "default",
    split: str = "magnn",
    seed: int = 0,
    modalities: Sequence[str] = MODALITIES,
    drop_rule: str = "regnn",
    numeric_stats: str = "train",
    max_keywords: int | None = None,
    person_text: str = "none",
) -> HeteroData:
    """Load IMDB as a contract ``HeteroData`` (see the module docstring for every choice).

    Args:
        root: folder with ``movie_metadata.csv`` (and optionally ``magnn_processed/``).
        text_encoder: ``"default"`` (:func:`imf_kg.encoders.text.encode_texts`), the path of an ``.npz`` written
            by :func:`save_text_features` (features encoded elsewhere, matched by text), or a callable
            ``texts -> EncodedModality | (n, dim) array``; used only when ``"text"`` is in ``modalities``.
        split: ``"magnn"`` or ``"random"``.
        seed: seed of the stratified split (when used).
        modalities: any of ``"text"``, ``"numeric"``, ``"keywords"``, in the order wanted.
        drop_rule: ``"regnn"`` (4,274 movies) or ``"magnn"`` (4,278 movies).
        numeric_stats: ``"train"`` or ``"all"`` (standardisation statistics of the numeric modality).
        max_keywords: keep only the most frequent keyword columns (by document frequency; ties by
            vocabulary order) to save memory; None keeps MAGNN's full vocabulary (3,065 columns).
        person_text: ``"none"`` (default): only movies have text. ``"movie_mean"``: a director's or actor's text
            features are the mean of their movies' (MAGNN's rule for the keyword bag, applied to the text
            modality), so text is shared along every edge, as in HGNN-IMA's release, where directors and actors
            carry copies of their keyword features as a second modality (spec 1.1).

    Returns:
        HeteroData with node types movie (target), director, actor and edge types
        (movie, directed_by, director), (director, directs, movie), (movie, stars, actor),
        (actor, acts_in, movie).
    """
    root = Path(root)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ConfigError(f"modalities={list(modalities)}; expected some of {list(MODALITIES)}")
    if split not in ("magnn", "random"):
        raise ConfigError(f"split={split!r}; expected 'magnn' or 'random'")
    if person_text not in ("none", "movie_mean"):
        raise ConfigError(f"person_text={person_text!r}; expected 'none' or 'movie_mean'")
    movies, labels = read_movies(root / "movie_metadata.csv", drop_rule)
    directors, actors = people(movies)
    counts = {"movie": len(movies), "director": len(directors), "actor": len(actors)}
    directed = movie_person_edges(movies, directors, ("director_name",))
    starring = movie_person_edges(movies, actors, ACTOR_COLUMNS)
    notes = [f"IMDB from {root / 'movie_metadata.csv'} (drop_rule={drop_rule}): MAGNN genre labels"]

    parts = _magnn_split(root, labels) if split == "magnn" else None
    if parts is not None:
        notes.append("split: magnn_processed/train_val_test_idx.npz (movie order verified against labels.npy)")
    else:
        n_train = len(labels) - MAGNN_VAL_SIZE - MAGNN_TEST_SIZE
        train, val, test = stratified_split(labels, (n_train, MAGNN_VAL_SIZE, MAGNN_TEST_SIZE), seed=seed)
        parts = {"train": train, "val": val, "test": test}
        why = "requested" if split == "random" else "MAGNN's split unavailable or its movie order differs"
        notes.append(f"split: seeded stratified (seed={seed}) with MAGNN's sizes ({why})")

    features: dict[str, dict] = {nt: {} for nt in counts}
    if "keywords" in modalities:
        movie_bag, vocabulary = keyword_bag(movies["plot_keywords"])
        if max_keywords is not None and max_keywords < len(vocabulary):
            frequency = np.asarray((movie_bag > 0).sum(axis=0)).ravel()
            keep = np.sort(np.argsort(-frequency, kind="stable")[:max_keywords])
            movie_bag = movie_bag[:, keep]
        bags = {"movie": movie_bag, "director": person_keyword_means(movie_bag, directed, len(directors)),
                "actor": person_keyword_means(movie_bag, starring, len(actors))}
        for nt, bag in bags.items():
            dense = torch.as_tensor(bag.toarray(), dtype=torch.float32)
            features[nt]["keywords"] = (dense, dense.abs().sum(1) > 0)
    if "numeric" in modalities:
        values, mask = numeric_features(movies, parts["train"].numpy(), numeric_stats)
        features["movie"]["numeric"] = (torch.as_tensor(values), torch.as_tensor(mask))
        notes.append(f"numeric: standardised with {numeric_stats} statistics; directors/actors have none")
    if "text" in modalities:
        features["movie"]["text"] = _encode_text(movie_texts(movies), text_encoder)
        if person_text == "movie_mean":
            for nt, edges, n in (("director", directed, len(directors)), ("actor", starring, len(actors))):
                features[nt]["text"] = person_text_means(*features["movie"]["text"], edges, n)
            notes.append("text: title + plot keywords; a director's / actor's text is the mean of their movies'")
        else:
            notes.append("text: title + plot keywords, movies only (directors/actors have no text)")
    relations = {("movie", "directed_by", "director"): ("directs", torch.as_tensor(directed)),
                 ("movie", "stars", "actor"): ("acts_in", torch.as_tensor(starring))}
    data = build_hetero(counts, list(modalities), features, relations, "movie", torch.as_tensor(labels),
                        parts, CLASS_NAMES, notes)
    # graph-level, not node-level: samplers would otherwise try to slice the lists
    data.node_names = {"movie": [str(t).replace("\xa0", " ").strip() for t in movies["movie_title"]],
                       "director": directors, "actor": actors}
    return data
