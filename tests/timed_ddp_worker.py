"""One rank of the 2-process TimedTrainLoop test (torch.distributed.run).

A toy model trains for a budget of real seconds through mmengine's
launcher, set up as ``tools/train.py --launcher pytorch`` does (gloo on the
CPU, the caller hides the GPUs); rank 1 is made 3x slower than rank 0.
Each rank writes the learning rates it trained with, its iterations and
its final parameters to OUT/rank<r>.pth.
"""
import sys
import time

import torch
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.runner import Runner

import psenet_plugin  # noqa: F401  (registers the loop)
from psenet_plugin.cli import set_launcher
# the same toy model and learning-rate log as the single-process tests
# (this script's folder, tests/, is first on the path)
from test_timed_loop import LrLog, Toy


def main():
    work_dir, seconds = sys.argv[1], float(sys.argv[2])
    torch.manual_seed(0)
    data = [dict(inputs=torch.randn(8), targets=torch.randn(()))
            for _ in range(64)]
    log = LrLog()
    setting = Config(dict())
    set_launcher(setting, 'pytorch')  # what tools/train.py --launcher does
    runner = Runner(
        # rank 1 three times slower
        model=Toy(lambda: time.sleep(0.01 if get_rank() == 0 else 0.03)),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=data, batch_size=4,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(type='TimedTrainLoop', max_seconds=seconds),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[log],
        launcher=setting.launcher,
        env_cfg=setting.env_cfg,
        cfg=setting,  # where the runner reads model_wrapper_cfg
        default_scope='mmengine')
    runner.train()
    torch.save(dict(lrs=log.lrs, iters=runner.iter,
                    parameters={k: v.detach().clone() for k, v in
                                runner.model.module.named_parameters()}),
               f'{work_dir}/rank{runner.rank}.pth')


if __name__ == '__main__':
    main()
