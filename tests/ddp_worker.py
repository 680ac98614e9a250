"""One rank of the 2-process DDP test (launched by torch.distributed.run).

Trains CONFIG through mmengine's launcher (``launcher='pytorch'``, set up
as ``tools/train.py --launcher pytorch`` does: gloo without a GPU, NCCL and
one GPU per rank with GPUs) and writes, per rank, the subnets it trained at
every step, its parameters, its prior statistics and the device type it
trained on to OUT/rank<r>.pth. The caller decides the device: it hides the
GPUs (``CUDA_VISIBLE_DEVICES=''``) for a CPU run.
"""
import sys

import torch
from mmengine.config import Config, DictAction  # noqa: F401
from mmengine.hooks import Hook
from mmengine.runner import Runner

import psenet_plugin  # noqa: F401
from psenet_plugin.cli import set_launcher


class RecordSubnets(Hook):
    priority = 'HIGH'  # before PriorRecorderHook consumes the records

    def __init__(self):
        self.subnets = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.subnets.append(runner.model.module.last_records['widths'])


def main():
    config, out = sys.argv[1:3]
    cfg = Config.fromfile(config)
    options = dict(arg.split('=', 1) for arg in sys.argv[3:])
    cfg.merge_from_dict({k: eval(v) for k, v in options.items()})
    set_launcher(cfg, 'pytorch')  # what tools/train.py --launcher does
    runner = Runner.from_cfg(cfg)
    recorder = RecordSubnets()
    runner.register_hook(recorder)
    runner.train()
    prior = next(h for h in runner.hooks
                 if type(h).__name__ == 'PriorRecorderHook')
    model = runner.model.module
    torch.save(
        dict(
            subnets=recorder.subnets,
            parameters={
                name: p.detach().cpu()
                for name, p in model.named_parameters()
            },
            prior=prior.stats.state_dict(),
            device=next(model.parameters()).device.type),
        f'{out}/rank{runner.rank}.pth')


if __name__ == '__main__':
    main()
