# PSE-Net on DeepLabV3-MobileNetV2 (1.0x, dilated, output stride 8) on
# Cityscapes: the paper-scale segmentation setting, as mmseg's
# deeplabv3_m-v2-d8_4xb2-80k_cityscapes-512x1024 (4 GPUs x 2 crops of
# 512x1024, 80k iterations). Data: data/cityscapes/ as mmseg expects it
# (leftImg8bit/, gtFine/ with *_labelTrainIds.png from mmseg's
# tools/dataset_converters/cityscapes.py); not shipped. The search scores
# candidates by mIoU on 300 training images held out of supernet training;
# the subnet is reported on val.
#   bash tools/dist_train.sh configs/seg/pse_deeplabv3_mbv2_cityscapes.py 4
# An ImageNet-pretrained MobileNetV2 supernet is the usual start:
#   model.architecture.backbone.init_cfg=dict(type='Pretrained', ...)
_base_ = ['./pse_fcn_mbv2_digits.py']

data_root = 'data/cityscapes/'
crop_size = (512, 1024)
heldout = 300

model = dict(
    # 2 crops per GPU: K=2 subnets, one crop each (the batch norms of a
    # group still see 512x1024 pixels). The image-pool branch of ASPP
    # normalises a 1x1 map: it needs at least 2 crops per group in
    # training, hence batch_mode='repeat' (both crops through every subnet).
    num_subnets=2,
    batch_mode='repeat',
    architecture=dict(
        data_preprocessor=dict(size=crop_size, seg_pad_val=255),
        backbone=dict(widen_factor=1.0),
        decode_head=dict(
            _delete_=True,
            type='ASPPHead',
            in_channels=320,
            in_index=3,
            channels=512,
            dilations=(1, 12, 24, 36),
            dropout_ratio=0.1,
            num_classes=19,
            norm_cfg=dict(type='BN', requires_grad=True),
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False,
                loss_weight=1.0))),
    # FLOPs of a subnet at the crop size; the channel analyzer traces on a
    # smaller input (the channel coupling does not depend on it).
    input_shape=(1, 3) + crop_size,
    mutator=dict(
        channel_unit_cfg=dict(
            default_args=dict(
                candidate_choices=[i / 12 for i in range(2, 13)],
                divisor=8)),
        parse_cfg=dict(demo_input=(1, 3, 256, 256))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
cityscapes = dict(type='CityscapesDataset', data_root=data_root)
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        heldout=heldout,
        dataset=dict(
            cityscapes,
            _delete_=True,
            data_prefix=dict(
                img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
            pipeline=train_pipeline)))
heldout_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        heldout=heldout,
        dataset=dict(
            cityscapes,
            _delete_=True,
            data_prefix=dict(
                img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
            pipeline=test_pipeline)))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        cityscapes,
        _delete_=True,
        data_prefix=dict(
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000,
                 val_interval=8000)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000,
         by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=8000, by_epoch=False, max_keep_ckpts=3))
