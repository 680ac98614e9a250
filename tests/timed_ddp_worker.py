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

import psenet_plugin  # noqa: F401  (registers the loop)
from psenet_plugin.cli import set_launcher
# the single-process tests' Runner (this script's folder, tests/, is first
# on the path)
from test_timed_loop import build


def main():
    work_dir, seconds = sys.argv[1], float(sys.argv[2])
    setting = Config(dict())
    set_launcher(setting, 'pytorch')  # what tools/train.py --launcher does
    runner, log = build(
        work_dir,
        # rank 1 three times slower
        lambda: time.sleep(0.01 if get_rank() == 0 else 0.03),
        dict(max_seconds=seconds),
        samples=64,
        shuffle=True,
        default_hooks=dict(checkpoint=None),
        launcher=setting.launcher,
        env_cfg=setting.env_cfg,
        cfg=setting)  # where the runner reads model_wrapper_cfg
    runner.train()
    torch.save(dict(lrs=log.lrs, iters=runner.iter,
                    parameters={k: v.detach().clone() for k, v in
                                runner.model.module.named_parameters()}),
               f'{work_dir}/rank{runner.rank}.pth')


if __name__ == '__main__':
    main()
