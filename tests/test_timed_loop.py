"""TimedTrainLoop: training for a wall-clock budget, the learning rate
annealed by elapsed time, resumable.

The loop reads a clock; these tests give it a simulated one that a training
step advances by a fixed number of seconds, so the budget's arithmetic is
checked exactly, never by timing this machine."""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import psenet_plugin  # noqa: F401  (registers the loop)
from psenet_plugin.engine.loops import timed_train_loop
from psenet_plugin.engine.loops.timed_train_loop import (SECONDS_KEY,
                                                         timed_lr_factor)
from psenet_plugin.errors import ConfigError


class Clock:
    """Simulated seconds: a training step costs ``step`` of them."""

    def __init__(self, step):
        self.now, self.step = 1000.0, step

    def __call__(self):
        return self.now

    def tick(self):
        self.now += self.step


class Toy(BaseModel):
    """A linear regression whose training forward calls ``tick`` (a
    simulated clock's, or a real sleep)."""

    def __init__(self, tick=None):
        super().__init__()
        self.linear = torch.nn.Linear(8, 1)
        self.tick = tick

    def forward(self, inputs, targets=None, mode='tensor'):
        if self.tick is not None and mode == 'loss':
            self.tick()
        out = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out


class LrLog(Hook):
    """The learning rate each iteration trained with."""

    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def build(work_dir, tick, train_cfg, resume=False, samples=16,
          shuffle=False, **kwargs):
    """A Runner training ``Toy(tick)`` under ``TimedTrainLoop`` and the
    ``LrLog`` it reports to; ``kwargs`` add or replace Runner arguments."""
    torch.manual_seed(0)
    data = [dict(inputs=torch.randn(8), targets=torch.randn(()))
            for _ in range(samples)]
    log = LrLog()
    runner = Runner(**dict(dict(
        model=Toy(tick),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=data, batch_size=4,
            sampler=dict(type='DefaultSampler', shuffle=shuffle),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(dict(type='TimedTrainLoop'), **train_cfg),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=4)),
        custom_hooks=[log],
        resume=resume,
        default_scope='mmengine'), **kwargs))
    return runner, log


def test_lr_factor_warms_up_linearly_then_anneals_by_cosine_to_zero():
    assert timed_lr_factor(0.0, 0.1, 0.1) == pytest.approx(0.1)
    assert timed_lr_factor(0.05, 0.1, 0.1) == pytest.approx(0.55)
    assert timed_lr_factor(0.1, 0.1, 0.1) == pytest.approx(1.0)
    assert timed_lr_factor(0.55, 0.1, 0.1) == pytest.approx(0.5)
    assert timed_lr_factor(1.0, 0.1, 0.1) == pytest.approx(0.0)
    assert timed_lr_factor(1.7, 0.1, 0.1) == pytest.approx(0.0)
    assert timed_lr_factor(0.0, 0.0, 0.1) == pytest.approx(1.0)


def test_training_ends_at_the_budget_with_the_lr_of_the_elapsed_fraction(
        tmp_path, monkeypatch):
    clock = Clock(step=2.0)
    monkeypatch.setattr(timed_train_loop, '_clock', clock)
    runner, log = build(str(tmp_path), clock.tick,
                        dict(max_seconds=20, warmup_ratio=0.1))
    runner.train()
    # 2 s a step: the 10th step ends at the budget's 20 s
    assert runner.iter == 10
    assert runner.train_loop.max_iters == 10
    assert runner.message_hub.get_info(SECONDS_KEY) == pytest.approx(20.0)
    assert log.lrs == pytest.approx(
        [0.1 * timed_lr_factor(2.0 * i / 20, 0.1, 0.1) for i in range(10)])
    # the last iteration is an ordinary last one: CheckpointHook saved it
    assert osp.isfile(osp.join(str(tmp_path), 'iter_10.pth'))


def test_a_slower_stretch_costs_iterations_not_the_end_of_the_schedule(
        tmp_path, monkeypatch):
    clock = Clock(step=1.0)
    monkeypatch.setattr(timed_train_loop, '_clock', clock)

    class Slowdown(Hook):

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            if runner.iter == 3:  # from the 5th step on, 3 s a step
                clock.step = 3.0

    runner, log = build(str(tmp_path), clock.tick, dict(max_seconds=16))
    runner.register_hook(Slowdown())
    runner.train()
    # 4 steps of 1 s, then 3 steps of 3 s ... 4 + 4 * 3 = 16 s
    assert runner.iter == 8
    elapsed = [0, 1, 2, 3, 4, 7, 10, 13]
    assert log.lrs == pytest.approx(
        [0.1 * timed_lr_factor(t / 16, 0.05, 0.1) for t in elapsed])
    assert log.lrs[-1] < 0.1 * 0.1  # the schedule's tail was trained


def test_max_iters_bounds_a_timed_training(tmp_path, monkeypatch):
    clock = Clock(step=1.0)
    monkeypatch.setattr(timed_train_loop, '_clock', clock)
    runner, _ = build(str(tmp_path), clock.tick,
                      dict(max_seconds=100, max_iters=6))
    runner.train()
    assert runner.iter == 6


def test_resume_continues_the_same_budget_and_schedule(tmp_path, monkeypatch):
    clock = Clock(step=2.0)
    monkeypatch.setattr(timed_train_loop, '_clock', clock)
    whole, whole_log = build(str(tmp_path / 'whole'), clock.tick,
                             dict(max_seconds=20, warmup_ratio=0.1))
    whole.train()

    # the same training stopped after its checkpoint at iteration 4
    class Stop(Hook):

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            if runner.iter + 1 == 4:
                runner.train_loop.stop_training = True

    clock = Clock(step=2.0)
    monkeypatch.setattr(timed_train_loop, '_clock', clock)
    work = str(tmp_path / 'parts')
    first, first_log = build(work, clock.tick,
                             dict(max_seconds=20, warmup_ratio=0.1))
    first.register_hook(Stop())
    first.train()
    assert first.iter == 4
    clock.now += 500  # the time between the runs is not training
    second, second_log = build(work, clock.tick,
                               dict(max_seconds=20, warmup_ratio=0.1),
                               resume=True)
    second.train()
    assert second.iter == 10
    assert first_log.lrs + second_log.lrs == pytest.approx(whole_log.lrs)
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(second.model.state_dict()[key], value)


def test_a_param_scheduler_beside_the_timed_loop_is_refused(tmp_path):
    runner, _ = build(str(tmp_path), None, dict(max_seconds=5),
                      param_scheduler=dict(type='ConstantLR', factor=0.5))
    with pytest.raises(ConfigError, match='param_scheduler'):
        runner.train()


@pytest.mark.parametrize('key,value', [('max_seconds', 0),
                                       ('max_seconds', '60'),
                                       ('max_iters', 2.5),
                                       ('warmup_ratio', 1.0),
                                       ('warmup_start_factor', 0)])
def test_bad_budget_keys_are_refused_by_name(tmp_path, key, value):
    cfg = dict(max_seconds=5)
    cfg[key] = value
    runner, _ = build(str(tmp_path), None, cfg)
    with pytest.raises(ConfigError, match=f'train_cfg.{key}'):
        runner.train()


def test_the_loop_is_found_from_downstream_scopes():
    from mmengine.registry import LOOPS
    from mmpretrain.registry import LOOPS as PRETRAIN_LOOPS
    from mmrazor.registry import LOOPS as RAZOR_LOOPS
    for registry in (LOOPS, PRETRAIN_LOOPS, RAZOR_LOOPS):
        assert (registry.get('TimedTrainLoop')
                is timed_train_loop.TimedTrainLoop)


def test_ranks_of_a_distributed_run_train_the_same_iterations(tmp_path):
    """Two gloo processes, rank 1 three times slower: rank 0's clock
    decides for both, so they stop at the same iteration with the same
    learning rates and weights (on its own clock rank 1 would stop first
    and leave rank 0 waiting in the all-reduce)."""
    import os
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node',
         '2', '--master-port', str(port), 'tests/timed_ddp_worker.py',
         str(tmp_path), '3'],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES=''))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1)]
    assert ranks[0]['iters'] == ranks[1]['iters'] > 5
    assert ranks[0]['lrs'] == ranks[1]['lrs']
    assert ranks[0]['lrs'][0] == pytest.approx(0.01)  # the warm-up's start
    for key, value in ranks[0]['parameters'].items():
        assert torch.equal(value, ranks[1]['parameters'][key]), key
