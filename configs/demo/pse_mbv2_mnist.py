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
