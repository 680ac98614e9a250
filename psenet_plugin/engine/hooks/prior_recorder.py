"""Prior recording during supernet training."""
import os.path as osp
from typing import Optional

from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmrazor.registry import HOOKS

from ...structures.prior import SubnetLossStats


@HOOKS.register_module()
class PriorRecorderHook(Hook):
    """Record every trained subnet's loss per unit and width (the prior).

    After every training iteration it reads what the PSENet algorithm
    trained (``last_records``: the K subnets' widths and group losses,
    averaged over ranks) into :class:`SubnetLossStats`. The statistics are
    saved in every checkpoint (key ``prior_stats``), restored on resume, and
    written to ``<work_dir>/<out_file>`` after every epoch (atomically).

    Args:
        top_n (int): how many lowest-loss subnets to keep. Defaults to 100.
        out_file (str): the JSON prior file, relative to the work dir.
            Defaults to ``'prior_stats.json'``.
    """

    priority = 'NORMAL'

    def __init__(self, top_n: int = 100,
                 out_file: str = 'prior_stats.json') -> None:
        self.stats = SubnetLossStats(top_n)
        self.out_file = out_file

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        records = getattr(model, 'last_records', None)
        if records is None:
            return
        losses = records['losses'].detach().float()
        if get_world_size() > 1:
            losses = losses.clone()
            all_reduce(losses, op='mean')
        self.stats.update(records['widths'], losses.tolist())
        model.last_records = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['prior_stats'] = self.stats.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'prior_stats' in checkpoint:
            self.stats.load_state_dict(checkpoint['prior_stats'])

    def after_train_epoch(self, runner) -> None:
        if is_main_process():
            self.stats.save(osp.join(runner.work_dir, self.out_file))
