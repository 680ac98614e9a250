# PSE-Net on mmpretrain's ResNet-50: K=4 subnets per step (max, min, 2
# random) trained in one forward/backward, with AutoSlim's candidate widths
# (2/12 ... 12/12 of every channel unit, multiples of 8; the full width is
# always a candidate). The leaf config adds the dataset, the schedule and
# the runtime.
_base_ = 'mmpretrain::_base_/models/resnet50.py'

custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)

supernet = _base_.model
supernet._scope_ = 'mmpretrain'

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='PSENet',
    architecture=supernet,
    num_subnets=4,
    sample_strategy='sandwich',
    batch_mode='split',
    execution='sliced',
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

custom_hooks = [dict(type='mmrazor.PriorRecorderHook', top_n=100)]
