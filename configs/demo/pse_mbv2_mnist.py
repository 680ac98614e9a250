# PSE-Net on the embedded MNIST digits: a few CPU minutes.
#   python tools/prepare_data.py mnist5k
#   python tools/train.py configs/demo/pse_mbv2_mnist.py
_base_ = [
    '../_base_/models/pse_mbv2_1.5x.py',
    '../_base_/datasets/mnist5k.py',
    '../_base_/schedules/mnist5k_pse.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(
    # At 32x32 the per-layer overhead of running each group separately
    # dominates: the masked step is faster here (1.05x a plain step against
    # 1.60x, benchmarks/parallel_step.py --size 32 --batch 64); at 128 px and
    # above the sliced default wins (0.45x against 0.96x at 224 px).
    execution='masked',
    # max, min, one subnet with every unit at the same random relative
    # width (the family between max and min) and one uniform per unit (the
    # prior's statistics): docs/experiments.md
    sample_strategy='sandwich_ratio',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(head=dict(num_classes=10, topk=(1, ))),
    mutator=dict(parse_cfg=dict(demo_input=(1, 3, 32, 32))))

val_cfg = dict(
    type='mmrazor.SubnetValLoop',
    calibrate_sample_num=1000,
    estimator_cfg=dict(type='mmrazor.SubnetFlopsEstimator'))

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=2))
