# PSE-Net on VGG-16 (with batch norm) as mmpretrain builds it for ImageNet:
# 13 convolutions, then the backbone's own classifier (flatten of the
# 512 x 7 x 7 maps, FC 4096, FC 4096, FC 1000). Every convolution's width
# and both hidden FC widths are searched; the flatten makes each of the
# last convolution's channels own a block of 49 inputs of the first FC,
# pruned together (psenet_plugin/models/mutables.py, PSEExpandedChannel).
# K=4 subnets per step with AutoSlim's candidate widths. The leaf config
# adds the dataset, the schedule and the runtime.
_base_ = 'mmpretrain::_base_/models/vgg16bn.py'

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
        # The classifier's first FC takes 512 x 7 x 7 inputs: the demo
        # input must be 224 x 224.
        parse_cfg=dict(
            type='ChannelAnalyzer',
            demo_input=(1, 3, 224, 224),
            tracer_type='FxTracer')))

custom_hooks = [dict(type='mmrazor.PriorRecorderHook', top_n=100)]
