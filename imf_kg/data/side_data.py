"""Entity side data attached to a loaded :class:`KnowledgeGraph` by entity name.

- text: ``entity_text.tsv`` (``name<TAB>text``) or the WN18 definitions file
  (``offset<TAB>__lemma_POS_n<TAB>gloss``, rendered ``lemma -- gloss`` like WN18RR's text) -> ``kg.entity_text``;
- feature matrices ``.npy`` / ``.pt`` / ``.pkl`` (the IMF reference pickles a numpy array), rows in entity-id
  order or named by an id file (one entity name per line) -> ``kg.features[modality]``;
- image folders (one sub-folder per entity, or files ``<entity>.jpg`` / ``<entity>_*.png``) -> ``kg.images``.

Names in a side file that the graph does not have are skipped and counted in ``kg.report.notes`` (the
FB15k-237 text file also covers FB15k's extra entities); anything malformed is refused with its file and line.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from imf_kg.data.kg import EntityFeatures, KnowledgeGraph
from imf_kg.data.parsing import numbered, read_lines
from imf_kg.errors import DataFormatError
from imf_kg.io import NumpyOnlyUnpickler

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FEATURE_SUFFIXES = (".npy", ".pt", ".pth", ".pkl", ".pickle")


# ------------------------------------------------------------------------------------------------- text
def read_entity_text(path: str | Path) -> dict[str, str]:
    """Entity name -> text from ``name<TAB>text`` lines or a WN18 definitions file (detected on line 1)."""
    path = Path(path)
    numbers, lines = numbered(read_lines(path, "entity text"))
    definitions = _is_wn18_definitions(lines[0])
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in zip(numbers, lines):
        parts = line.split("\t", 2 if definitions else 1)
        if len(parts) != (3 if definitions else 2) or not parts[0].strip():
            expected = "offset<TAB>__lemma_POS_n<TAB>gloss" if definitions else "entity<TAB>text"
            raise DataFormatError(path, number, f"{len(parts)} tab-separated fields {line!r}", expected)
        name = parts[0].strip()
        if name in first_line:
            raise DataFormatError(path, number, f"entity {name!r} again (first on line {first_line[name]})", "one line per entity")
        first_line[name] = number
        texts[name] = _render_definition(parts[1], parts[2]) if definitions else parts[1].strip()
    return texts


def _is_wn18_definitions(first_line: str) -> bool:
    parts = first_line.split("\t")
    return len(parts) == 3 and parts[1].startswith("__")


def _render_definition(synset: str, gloss: str) -> str:
    """``__stool_NN_2`` + gloss -> ``stool -- gloss`` (the lemma without its part of speech and sense number)."""
    lemma = synset.strip().lstrip("_")
    pieces = lemma.rsplit("_", 2)
    if len(pieces) == 3 and pieces[2].isdigit():
        lemma = pieces[0]
    return f"{lemma.replace('_', ' ')} -- {gloss.strip()}"


def attach_text(kg: KnowledgeGraph, path: str | Path) -> int:
    """Set ``kg.entity_text`` from a text file (entries for the same entity are replaced).

    Returns the number of graph entities the file gives text for. Empty text counts as no text.
    """
    path = Path(path)
    texts = read_entity_text(path)
    current = list(kg.entity_text) if kg.entity_text is not None else [None] * kg.num_entities
    matched = 0
    for name, text in texts.items():
        index = kg.entity_to_id.get(name)
        if index is not None and text:
            current[index] = text
            matched += 1
    kg.entity_text = current
    _note_unmatched(kg, path, len(texts) - sum(1 for name in texts if name in kg.entity_to_id), "lines")
    return matched


# -------------------------------------------------------------------------------------------- features
def read_feature_matrix(path: str | Path) -> np.ndarray:
    """A 2-D array from ``.npy``, ``.pt``/``.pth`` (a tensor) or ``.pkl``/``.pickle`` (a numpy array).

    Raises:
        DataFormatError: unreadable file, unknown suffix, or content that is not a 2-D numeric array.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise DataFormatError(path, None, f"suffix {suffix or '(none)'!r}", f"a feature file ending in {', '.join(FEATURE_SUFFIXES)}")
    if not path.is_file():
        raise DataFormatError(path, None, "no such file", "a feature matrix file")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            with warnings.catch_warnings():  # torch warns about pickle protocols before failing on junk
                warnings.simplefilter("ignore")
                array = torch.load(path, map_location="cpu", weights_only=True)
        else:
            array = NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:  # any reader failure is a malformed file, reported in one line
        message = str(err).splitlines()[0] if str(err) else ""
        raise DataFormatError(path, None, f"{type(err).__name__}: {message}", f"a readable {suffix} feature matrix") from None
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy() if array.dtype != torch.bfloat16 else array.float().numpy()
    if not isinstance(array, np.ndarray):
        raise DataFormatError(path, None, f"a {type(array).__name__}", "a 2-D array (entities x dim)")
    if array.ndim != 2:
        raise DataFormatError(path, None, f"an array of shape {tuple(array.shape)}", "a 2-D array (entities x dim)")
    if array.dtype.kind not in "fiub":
        raise DataFormatError(path, None, f"an array of dtype {array.dtype}", "a numeric array")
    if array.shape[1] == 0:
        raise DataFormatError(path, None, f"an array of shape {tuple(array.shape)}", "at least one feature column")
    return array


def read_entity_list(path: str | Path) -> tuple[list[int], list[str]]:
    """An id file naming feature rows: one entity name per line. Returns line numbers and names."""
    path = Path(path)
    numbers, names = numbered(read_lines(path, "entity names"))
    first: dict[str, int] = {}
    for number, name in zip(numbers, names):
        if name in first:
            raise DataFormatError(path, number, f"entity {name!r} again (first on line {first[name]})", "each entity once")
        first[name] = number
    return numbers, names


def attach_features(kg: KnowledgeGraph, modality: str, path: str | Path, ids_path: str | Path | None = None) -> EntityFeatures:
    """Attach a feature matrix as ``kg.features[modality]``.

    Without ``ids_path`` the file holds one row per entity in id order, ``(num_entities, dim)``, and every
    entity has the modality. With ``ids_path`` row ``i`` belongs to the entity named on the ``i``-th
    non-blank line; other entities get a zero row and ``mask`` False; names absent from the graph are skipped.

    Returns:
        The :class:`EntityFeatures` (``values`` ``(num_entities, dim)`` float32, ``mask`` ``(num_entities,)``).
    """
    path = Path(path)
    array = read_feature_matrix(path)
    if ids_path is None:
        if array.shape[0] != kg.num_entities:
            raise DataFormatError(
                path, None, f"{array.shape[0]} rows",
                f"{kg.num_entities} rows, one per entity in id order (or pass an id file naming the rows)",
            )
        _check_finite(path, array, None)
        values = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))
        mask = torch.ones(kg.num_entities, dtype=torch.bool)
    else:
        ids_path = Path(ids_path)
        numbers, names = read_entity_list(ids_path)
        if array.shape[0] != len(names):
            raise DataFormatError(path, None, f"{array.shape[0]} rows", f"{len(names)} rows, one per name in {ids_path}")
        _check_finite(path, array, names)
        rows = [k for k, name in enumerate(names) if name in kg.entity_to_id]
        targets = torch.tensor([kg.entity_to_id[names[k]] for k in rows], dtype=torch.long)
        values = torch.zeros(kg.num_entities, array.shape[1], dtype=torch.float32)
        values[targets] = torch.as_tensor(np.ascontiguousarray(array[rows], dtype=np.float32))
        mask = torch.zeros(kg.num_entities, dtype=torch.bool)
        mask[targets] = True
        _note_unmatched(kg, ids_path, len(names) - len(rows), "names")
    features = EntityFeatures(values=values, mask=mask, source=str(path))
    kg.features[modality] = features
    return features


def _check_finite(path: Path, array: np.ndarray, names: list[str] | None) -> None:
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        value = array[row][~np.isfinite(array[row])][0]
        who = f" (entity {names[row]!r})" if names is not None else ""
        raise DataFormatError(path, None, f"{value} in row {row}{who}", "finite numbers (no NaN or inf)")
    limit = np.finfo(np.float32).max
    if array.dtype.itemsize > 4 and (np.abs(array) > limit).any():  # float64 that would become inf as float32
        row = int(np.flatnonzero((np.abs(array) > limit).any(axis=1))[0])
        raise DataFormatError(path, None, f"a value beyond the float32 range in row {row}", "finite float32 features")


# ---------------------------------------------------------------------------------------------- images
def image_keys(name: str) -> list[str]:
    """File-system spellings of an entity name: itself; ``/m/06rf7`` -> ``m.06rf7`` (MMKG's Freebase image
    folders); a DBpedia URI ``<http://dbpedia.org/resource/X>`` -> ``X``."""
    keys = [name]
    if "/" in name and not name.startswith("<"):
        keys.append(name.strip("/").replace("/", "."))
    if name.startswith("<") and name.endswith(">"):
        keys.append(name[1:-1].rstrip("/").rsplit("/", 1)[-1])
    return [k for k in dict.fromkeys(keys) if k]


def attach_images(kg: KnowledgeGraph, folder: str | Path) -> dict[int, list[str]]:
    """Set ``kg.images`` (entity id -> sorted image paths) from an image folder.

    An entity's images are the image files in sub-folder ``<entity>/`` or named ``<entity>.<ext>`` /
    ``<entity>_<anything>.<ext>`` (the longest entity name before an underscore wins). Unmatched images are
    counted in ``kg.report.notes``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, None, "no such folder", "a folder of entity images")
    lookup: dict[str, int] = {}
    for index, name in enumerate(kg.entity_names):  # the exact name wins over a derived spelling
        for rank, key in enumerate(image_keys(name)):
            if rank == 0 or key not in lookup:
                lookup[key] = index
    images: dict[int, list[str]] = {}
    unmatched = 0
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            index = lookup.get(entry.name)
            files = [p for p in sorted(entry.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if index is None:
                unmatched += len(files)
            elif files:
                images.setdefault(index, []).extend(str(p) for p in files)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            index = _entity_of_file(entry.stem, lookup)
            if index is None:
                unmatched += 1
            else:
                images.setdefault(index, []).append(str(entry))
    kg.images = {index: sorted(paths) for index, paths in sorted(images.items())}
    _note_unmatched(kg, folder, unmatched, "images")
    return kg.images


def _entity_of_file(stem: str, lookup: dict[str, int]) -> int | None:
    if stem in lookup:
        return lookup[stem]
    cut = stem.rfind("_")
    while cut > 0:
        if stem[:cut] in lookup:
            return lookup[stem[:cut]]
        cut = stem.rfind("_", 0, cut)
    return None


def _note_unmatched(kg: KnowledgeGraph, path: Path, count: int, what: str) -> None:
    if count:
        kg.report.notes.append(f"{path}: {count} {what} name entities absent from the graph (skipped)")
