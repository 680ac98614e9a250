# The AutoSlim baseline on the embedded MNIST digits, a few CPU minutes an
# epoch:   python tools/train.py configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py
_base_ = [
    '../_base_/models/autoslim_mbv2_1.5x.py',
    '../_base_/datasets/mnist5k.py',
    '../_base_/schedules/mnist5k_sgd.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(
    data_preprocessor=dict(
        type='mmpretrain.ClsDataPreprocessor', **_base_.data_preprocessor),
    architecture=dict(head=dict(num_classes=10, topk=(1, ))),
    mutator=dict(parse_cfg=dict(demo_input=(1, 3, 32, 32))))

default_hooks = dict(logger=dict(interval=10))

# AutoSlim.train_step calls `optim_wrapper.update_params` once per subnet
# (max, min and `num_random_samples` random ones). With the default
# accumulative_counts=1 that is one optimizer step per subnet, not one step
# per batch as in the paper: accumulate over the subnets instead.
optim_wrapper = dict(accumulative_counts=_base_.num_random_samples + 2)

# Validate the max and min subnets, BN statistics recalibrated for each.
val_cfg = dict(type='mmrazor.SubnetValLoop', calibrate_sample_num=1000)
