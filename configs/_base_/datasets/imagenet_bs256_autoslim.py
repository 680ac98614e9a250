# ImageNet as MMRazor's AutoSlim / BCNet settings use it
# (mmrazor configs/_base_/settings/imagenet_bs2048_autoslim_pil.py), on
# mmpretrain bases: 256 images per GPU (2048 on 8 GPUs), pillow resizing,
# RandomResizedCrop with scale (0.25, 1.0), colour jitter 0.4.
# Expects mmpretrain's ImageNet layout under data/imagenet
# (train/, val/, meta/train.txt, meta/val.txt).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.25, 1.0),
        backend='pillow'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

# About 10,000 training images (0.8%) are held out of supernet training (as
# OFA and BigNAS do): the search scores candidates on them
# (heldout_dataloader) and the result is reported on val, which the search
# never sees.
heldout = 0.008
_imagenet_train = _base_.train_dataloader.dataset

train_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        _delete_=True,
        type='HeldOutSplit',
        part='train',
        heldout=heldout,
        dataset=dict(_imagenet_train, pipeline=train_pipeline)))

heldout_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        type='HeldOutSplit',
        part='heldout',
        heldout=heldout,
        dataset=dict(_imagenet_train, pipeline=_base_.test_pipeline)),
    sampler=dict(type='DefaultSampler', shuffle=False))

val_dataloader = dict(batch_size=256, num_workers=8, persistent_workers=True)
test_dataloader = val_dataloader
