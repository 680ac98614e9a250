"""Keep the choice a subnet config gives mmrazor's one-shot channel units.

Upstream defect: mmrazor 1.0.0's ``OneShotMutableChannelUnit.
prepare_for_pruning`` (``mmrazor/models/mutables/mutable_channel/units/
one_shot_mutable_channel_unit.py``) ends with ``self.current_choice =
self.max_choice``. In mmrazor's ``'mutator'`` subnet mode
(``sub_model(cfg, fix_subnet, mode='mutator')``, ``load_fix_subnet``) the
unit is built from the subnet config with its ``choice`` first and
prepared after, so the choice is reset to the max width without a word and
the "pruned" model is the whole supernet: the weights exported for an
AutoSlim subnet then do not load into it (size mismatches).

The fix: the unit keeps the choice it had before it was prepared. A unit
built by the tracer (not from a subnet config) starts at its max width, so
supernets are prepared as before. PSE-Net's own unit does the same
(``PSEMutableChannelUnit.prepare_for_pruning``).
"""

_upstream = None


def apply() -> None:
    global _upstream
    from mmrazor.models.mutables import OneShotMutableChannelUnit
    if _upstream is not None:
        return
    _upstream = OneShotMutableChannelUnit.prepare_for_pruning

    def prepare_for_pruning(self, model):
        choice = self.current_choice
        _upstream(self, model)
        self.current_choice = choice

    prepare_for_pruning.__doc__ = _upstream.__doc__
    OneShotMutableChannelUnit.prepare_for_pruning = prepare_for_pruning


def remove() -> None:
    """Undo :func:`apply` (for the test that shows the defect)."""
    global _upstream
    from mmrazor.models.mutables import OneShotMutableChannelUnit
    if _upstream is not None:
        OneShotMutableChannelUnit.prepare_for_pruning = _upstream
        _upstream = None
