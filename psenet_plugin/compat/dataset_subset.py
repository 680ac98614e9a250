"""Give every dataset subset a deep-copy memo of its own.

Upstream defect: mmengine 0.10's ``BaseDataset._copy_without_annotation``
(``mmengine/dataset/base_dataset.py``), which ``get_subset`` calls, takes
its deep-copy memo as a mutable default argument, ``memo=dict()``: one
memo for every subset made in a process, keyed by ``id()`` and never
cleared. So two subsets of one dataset share its pipeline and every other
attribute (the second copy finds the first's objects in the memo), every
copy stays alive, and the memo maps the id of each dataset it copied to
that copy without keeping the dataset alive: once the dataset is freed, a
new object can get its id, and a later subset's deep copy of that object
returns the stale copy instead. Seen in this project's test suite: a
subset's ``pipeline`` became an earlier subset (a ``CustomDataset``), and
its first sample failed with "'CustomDataset' object is not callable".
``HeldOutSplit`` returns a subset of a dataset it frees at once, and a
search builds two of them in one process.

The fix: ``_copy_without_annotation`` called without a memo gets a fresh
one.
"""
_upstream = None


def apply() -> None:
    global _upstream
    from mmengine.dataset import BaseDataset
    if _upstream is not None:
        return
    _upstream = BaseDataset._copy_without_annotation

    def _copy_without_annotation(self, memo=None):
        return _upstream(self, {} if memo is None else memo)

    _copy_without_annotation.__doc__ = _upstream.__doc__
    BaseDataset._copy_without_annotation = _copy_without_annotation


def remove() -> None:
    """Undo :func:`apply` (for the test that shows the defect)."""
    global _upstream
    from mmengine.dataset import BaseDataset
    if _upstream is not None:
        BaseDataset._copy_without_annotation = _upstream
        _upstream = None
