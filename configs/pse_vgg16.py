# PSE-Net, the paper's ImageNet setting on VGG-16 (batch norm, mmpretrain's
# fully connected classifier): the supernet schedule of MMRazor's AutoSlim
# configs (8 GPUs x 256 images, 50 epochs, linear decay), as
# configs/pse_mbv2.py, except the learning rate.
#   bash: torchrun --nproc-per-node 8 tools/train.py configs/pse_vgg16.py --launcher pytorch
_base_ = [
    '_base_/models/pse_vgg16bn.py',
    '_base_/datasets/imagenet_bs256_autoslim.py',
    '_base_/schedules/imagenet_bs2048_autoslim.py',
    'mmpretrain::_base_/default_runtime.py',
]

# mmpretrain's VGG-16-BN recipe (vgg16bn_8xb32_in1k.py) trains at lr 0.01
# per 256 images; linearly scaled to 2048 images: 0.08 (AutoSlim's 0.5 is
# tuned for MobileNetV2; not measured on VGG here).
optim_wrapper = dict(optimizer=dict(lr=0.08))

# The max subnet is one of the K subnets: every parameter is used in every
# step.
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)

val_cfg = dict(
    type='mmrazor.SubnetValLoop',
    calibrate_sample_num=4096,
    estimator_cfg=dict(type='mmrazor.SubnetFlopsEstimator'))
