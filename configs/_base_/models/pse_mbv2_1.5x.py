# PSE-Net on an mmpretrain MobileNetV2 1.5x supernet: K=4 subnets per step
# (max, min, 2 random) trained in one forward/backward, with AutoSlim's
# candidate widths (2/12 ... 12/12 of every layer, multiples of 8).
# The leaf config adds the dataset, the schedule and the runtime.
_base_ = './mobilenet_v2_1.5x.py'

custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)

supernet = _base_.model

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='PSENet',
    architecture=supernet,
    num_subnets=4,
    # or 'sandwich_ratio' (the demo), 'max_random', 'max_random_ratio',
    # 'uniform', 'flops_uniform'
    sample_strategy='sandwich',
    # 'split': each subnet on a K-th of the batch (the paper's cost);
    # 'repeat': each on the whole batch, about K times the cost; weight
    # sharing then costs little at equal epochs (digits, max / min gap to
    # standalone: 0.1 / 0.2 (seed 1), 0.6 / 0.3 (seed 2) against split's
    # 1.5 / 2.0 and 2.9 / 5.9; benchmarks/README.md)
    batch_mode='split',
    execution='sliced',  # or 'masked' (faster for tiny inputs, see README)
    mutator=dict(
        type='PSEChannelMutator',
        channel_unit_cfg=dict(
            type='PSEMutableChannelUnit',
            default_args=dict(
                candidate_choices=[i / 12 for i in range(2, 13)],
                choice_mode='ratio',
                divisor=8)),
        parse_cfg=dict(
            type='ChannelAnalyzer',
            demo_input=(1, 3, 224, 224),
            tracer_type='FxTracer')))

# Records every trained subnet's loss per unit and width: the search prior.
custom_hooks = [dict(type='mmrazor.PriorRecorderHook', top_n=100)]
