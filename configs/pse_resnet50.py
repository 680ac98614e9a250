# PSE-Net, the paper's ImageNet setting on ResNet-50: the supernet
# schedule of MMRazor's AutoSlim configs (8 GPUs x 256 images, SGD lr 0.5,
# 50 epochs, linear decay), as configs/pse_mbv2.py.
#   bash: torchrun --nproc-per-node 8 tools/train.py configs/pse_resnet50.py --launcher pytorch
# Search: configs/search/pse_mbv2_search_8xb256_in1k.py with
#   _base_ = ['../pse_resnet50.py'] and the FLOPs target of choice
#   (constraints_range=dict(flops=(1900., 2100.)) for 2 GFLOPs).
_base_ = [
    '_base_/models/pse_resnet50.py',
    '_base_/datasets/imagenet_bs256_autoslim.py',
    '_base_/schedules/imagenet_bs2048_autoslim.py',
    'mmpretrain::_base_/default_runtime.py',
]

# Every rank trains the same K subnets on its own samples; the max subnet
# is one of them, so every parameter is used in every step.
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
