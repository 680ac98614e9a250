# mmpretrain's MobileNetV2 widened 1.5x (1920 features before the head): the
# supernet of AutoSlim, BCNet and PSE-Net on ImageNet.
_base_ = 'mmpretrain::_base_/models/mobilenet_v2_1x.py'

model = dict(
    _scope_='mmpretrain',
    backbone=dict(widen_factor=1.5),
    head=dict(in_channels=1920))
