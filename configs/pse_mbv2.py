# PSE-Net, the paper's setting: a MobileNetV2 1.5x supernet on ImageNet,
# scaled like MMRazor's AutoSlim config (8 GPUs x 256 images, SGD lr 0.5,
# 50 epochs, linear decay).
#   bash: torchrun --nproc-per-node 8 tools/train.py configs/pse_mbv2.py --launcher pytorch
_base_ = [
    '_base_/models/pse_mbv2_1.5x.py',
    '_base_/datasets/imagenet_bs256_autoslim.py',
    '_base_/schedules/imagenet_bs2048_autoslim.py',
    'mmpretrain::_base_/default_runtime.py',
]

# Every rank trains the same K subnets on its own samples; one all-reduce of
# the gradients per step (mmengine's DDP wrapper). All channels are used in
# every step (the max subnet is one of the K), so no unused parameters.
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)

# Validate the max and min subnets, BN statistics recalibrated for each;
# FLOPs from the exact table.
val_cfg = dict(
    type='mmrazor.SubnetValLoop',
    calibrate_sample_num=4096,
    estimator_cfg=dict(type='mmrazor.SubnetFlopsEstimator'))
