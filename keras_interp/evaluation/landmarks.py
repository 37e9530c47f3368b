"""Which landmarks location instability is scored against.

The authors score CUB against part ids 1, 6 and 14 (`showResults.m`): back,
forehead (standing in for the paper's "head") and tail (`docs/method_notes.md`).
Other datasets default to every landmark they annotate; each landmark is
scored on the images where it is visible (`location_instability`), so
classes with different landmark sets need no choice here.
"""

from typing import Any
from typing import Optional
from typing import Sequence

# The authors' CUB landmarks; the one definition (`train` re-exports it).
CUB_EVAL_PARTS = ("back", "forehead", "tail")


def landmark_ids(
    part_names: Sequence[Any], names: Optional[Sequence[str]] = None
) -> Optional[list]:
    """Indices (into `part_names`) of the landmarks to evaluate.

    Args:
        part_names: the dataset's landmark names, in part-id order (e.g.
            `CubIndex.part_names`); empty when it has none.
        names: the requested landmark names, or None / empty for the
            default: `CUB_EVAL_PARTS` when the dataset has all three, else
            every landmark.

    Returns:
        A list of indices, or None when the dataset has no landmarks.

    Raises:
        ValueError: if a requested name is not a landmark of the dataset.

    Example:

    >>> landmark_ids(["back", "beak", "forehead", "tail"])
    [0, 2, 3]
    >>> landmark_ids(["eye", "mouth", "ear"], ["ear"])
    [2]
    """
    available = [str(n) for n in part_names]
    if not available:
        return None
    if names:
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(
                f"`parts` {missing} are not landmarks of this dataset. "
                f"Available: {available}."
            )
        return [available.index(n) for n in names]
    if all(n in available for n in CUB_EVAL_PARTS):
        return [available.index(n) for n in CUB_EVAL_PARTS]
    return list(range(len(available)))
