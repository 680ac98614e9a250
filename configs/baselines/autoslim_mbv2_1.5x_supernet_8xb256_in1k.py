# MMRazor's AutoSlim MobileNetV2 1.5x supernet on ImageNet (8 GPUs x 256),
# ported to mmpretrain: the baseline PSE-Net is compared with.
#   python tools/train.py configs/baselines/autoslim_mbv2_1.5x_supernet_8xb256_in1k.py
_base_ = [
    '../_base_/models/autoslim_mbv2_1.5x.py',
    '../_base_/datasets/imagenet_bs256_autoslim.py',
    '../_base_/schedules/imagenet_bs2048_autoslim.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(
    data_preprocessor=dict(
        type='mmpretrain.ClsDataPreprocessor', **_base_.data_preprocessor))

# AutoSlim.train_step calls `optim_wrapper.update_params` once per subnet
# (max, min and `num_random_samples` random ones). With the default
# accumulative_counts=1 that is one optimizer step per subnet, not one step
# per batch as in the paper: accumulate over the subnets instead.
optim_wrapper = dict(accumulative_counts=_base_.num_random_samples + 2)

# Validate the max and min subnets, BN statistics recalibrated for each.
val_cfg = dict(type='mmrazor.SubnetValLoop', calibrate_sample_num=4096)
