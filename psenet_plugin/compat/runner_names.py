"""Give every mmengine Runner of a process its own logger and scope.

Upstream defect: mmengine 0.10's ``Runner.__init__``
(``mmengine/runner/runner.py``) names the experiment
``<config name>_<timestamp to the second>`` and fetches its logger,
message hub, default scope and visualizer by that name from process-wide
registries (``ManagerMixin.get_instance``): the first instance of a name
wins. A second Runner of the same config built in the same second of one
process (a notebook, a script training then testing, a test suite) gets
the first Runner's logger (so it logs into the first run's log file and to
the first run's stream, which may be closed by then: "--- Logging error
---" and a traceback on stderr), its message hub and its default scope.

The fix: a Runner built without an ``experiment_name`` whose config name
already names a logger of this process (an earlier Runner of that config,
whatever the second) gets ``<config name>-<n>`` (mmengine appends the
timestamp), the first ``n`` not yet taken, so its name is its own. The
first Runner of a config keeps mmengine's name.
"""
import os.path as osp

_upstream = None


def _unique_name(stem: str) -> str:
    """``stem``, or ``stem-<n>`` if a logger of this process already
    carries a name made from ``stem`` (``stem_<timestamp>``,
    ``stem-<n>_<timestamp>``)."""
    from mmengine.logging import MMLogger
    taken = set()
    for name in MMLogger._instance_dict:
        if name.startswith(stem + '_'):
            taken.add(0)
        elif name.startswith(stem + '-'):
            number = name[len(stem) + 1:].split('_')[0]
            if number.isdigit():
                taken.add(int(number))
    if not taken:
        return stem
    number = next(n for n in range(1, len(taken) + 2) if n not in taken)
    return f'{stem}-{number}'


def apply() -> None:
    global _upstream
    from mmengine.runner import Runner
    if _upstream is not None:
        return
    _upstream = Runner.__init__

    def __init__(self, *args, experiment_name=None, cfg=None, **kwargs):
        filename = getattr(cfg, 'filename', None)
        if experiment_name is None and filename:
            stem = osp.splitext(osp.basename(filename))[0]
            unique = _unique_name(stem)
            if unique != stem:
                experiment_name = unique
        _upstream(self, *args, experiment_name=experiment_name, cfg=cfg,
                  **kwargs)

    __init__.__doc__ = _upstream.__doc__
    Runner.__init__ = __init__


def remove() -> None:
    """Undo :func:`apply` (for the test that shows the defect)."""
    global _upstream
    from mmengine.runner import Runner
    if _upstream is not None:
        Runner.__init__ = _upstream
        _upstream = None
