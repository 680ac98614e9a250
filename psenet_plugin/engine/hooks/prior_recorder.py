"""Prior recording during supernet training."""
import os.path as osp
from typing import List, Optional

from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmrazor.registry import HOOKS

from ...errors import ConfigError
from ...structures.prior import OLD_PRIOR_FORMATS, SubnetLossStats


@HOOKS.register_module()
class PriorRecorderHook(Hook):
    """Record the randomly drawn subnets' losses per unit and width (the
    prior).

    After every training iteration it reads what the PSENet algorithm
    trained (``last_records``: the K subnets' widths, kinds and group
    losses, averaged over ranks) into :class:`SubnetLossStats`, which keeps
    the random subnets' losses minus a per-step baseline (the max and min
    subnets carry no per-unit information). The statistics are saved in
    every checkpoint (key ``prior_stats``), restored on resume, and written
    to ``<work_dir>/<out_file>`` after every epoch (atomically). Resuming a
    checkpoint whose statistics are of an older format starts new
    statistics, with a warning.

    The PSENet may be the model itself or inside it: the student
    (``architecture``) of a distillation algorithm such as mmrazor's
    ``SingleTeacherDistill``. A model holding no PSENet (mmrazor's AutoSlim,
    a plain classifier) is refused before training starts: it would record
    nothing.

    Args:
        top_n (int): how many random subnets of lowest baseline-corrected
            loss to keep (they seed the search). Defaults to 100.
        out_file (str): the JSON prior file, relative to the work dir.
            Defaults to ``'prior_stats.json'``.
    """

    priority = 'NORMAL'

    def __init__(self, top_n: int = 100,
                 out_file: str = 'prior_stats.json') -> None:
        self.stats = SubnetLossStats(top_n)
        self.out_file = out_file

    def before_train(self, runner) -> None:
        self._recorded = _psenets(runner.model)
        if not self._recorded:
            model = runner.model.module if is_model_wrapper(
                runner.model) else runner.model
            raise ConfigError(
                'custom_hooks: PriorRecorderHook records the subnets a '
                f'PSENet trains, and model ({type(model).__name__}) holds '
                "no PSENet; accepted: model.type='PSENet', or a PSENet as "
                'the architecture (student) of a distillation algorithm '
                "(e.g. SingleTeacherDistill); without one, remove the hook")

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        psenets = getattr(self, '_recorded', None)
        if psenets is None:
            psenets = self._recorded = _psenets(runner.model)
        for model in psenets:
            if getattr(model, 'last_records', None) is not None:
                self._record(model)

    def _record(self, model) -> None:
        records = model.last_records
        losses = records['losses'].detach().float()
        if get_world_size() > 1:
            losses = losses.clone()
            all_reduce(losses, op='mean')
        if records.get('kinds') is None:
            raise ConfigError(
                'PriorRecorderHook needs the kinds of the trained subnets '
                f"('max', 'min', 'rand<k>') in {type(model).__name__}."
                "last_records['kinds']; accepted: model.type='PSENet'")
        self.stats.update(records['widths'], losses.tolist(),
                          records['kinds'])
        model.last_records = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['prior_stats'] = self.stats.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('prior_stats')
        if state is None:
            return
        if state.get('format') in OLD_PRIOR_FORMATS:
            print_log(
                f'the checkpoint\'s prior statistics are of the old format '
                f'{state["format"]!r} (losses of every subnet, max and min '
                'included), which cannot be converted; recording new '
                'statistics from this step on', logger='current', level=30)
            return
        self.stats.load_state_dict(state)

    def after_train_epoch(self, runner) -> None:
        if is_main_process():
            self.stats.save(osp.join(runner.work_dir, self.out_file))


def _psenets(model) -> List:
    """What records the subnets it trains (a PSENet: ``last_records``) in
    ``model``: itself, or a module inside it (e.g. the student of a
    distillation algorithm), outermost first."""
    model = model.module if is_model_wrapper(model) else model
    if hasattr(model, 'last_records'):
        return [model]
    modules = model.modules() if hasattr(model, 'modules') else []
    return [m for m in modules if hasattr(m, 'last_records')]
