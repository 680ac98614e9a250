# PSE-Net on RetinaNet-MobileNetV2 (1.0x, FPN 256) on COCO 2017: the
# paper-scale detection setting (8 GPUs x 2 images, 1333x800, 12 epochs,
# mmdet's RetinaNet 1x schedule). Data: data/coco/ as mmdet expects it
# (annotations/instances_{train,val}2017.json, train2017/, val2017/); not
# shipped. The search scores candidates by box mAP on 5,000 training images
# held out of supernet training; the subnet is reported on val2017.
#   bash tools/dist_train.sh configs/det/pse_retinanet_mbv2_coco.py 8
# (or python tools/train.py ... --launcher pytorch under torchrun).
# An ImageNet-pretrained MobileNetV2 supernet is the usual start:
#   model.architecture.backbone.init_cfg=dict(type='Pretrained', ...)
_base_ = ['./pse_retinanet_mbv2_digits.py']

data_root = 'data/coco/'
image_scale = (1333, 800)
heldout = 5000

model = dict(
    # 2 images per GPU: K=2 subnets, one image each (the batch norms of a
    # group still see 800x1333 pixels). K=4 needs 4 images per GPU, or
    # batch_mode='repeat' (every subnet on both images, twice the cost).
    num_subnets=2,
    architecture=dict(
        backbone=dict(widen_factor=1.0, out_indices=(2, 4, 6)),
        neck=dict(
            in_channels=[32, 96, 320],
            out_channels=256,
            start_level=0,
            add_extra_convs='on_input',
            num_outs=5),
        bbox_head=dict(
            num_classes=80,
            in_channels=256,
            stacked_convs=4,
            feat_channels=256,
            anchor_generator=dict(
                octave_base_scale=4,
                scales_per_octave=3,
                strides=[8, 16, 32, 64, 128])),
        test_cfg=dict(
            nms_pre=1000, score_thr=0.05, max_per_img=100)),
    # FLOPs of a subnet at the COCO test scale; the channel analyzer traces
    # on a smaller input (the channel coupling does not depend on it).
    input_shape=(1, 3, 800, 1344),
    mutator=dict(
        channel_unit_cfg=dict(
            default_args=dict(
                candidate_choices=[i / 12 for i in range(2, 13)],
                divisor=8)),
        parse_cfg=dict(demo_input=(1, 3, 320, 320))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
coco = dict(
    type='CocoDataset',
    data_root=data_root,
    metainfo=None,
    filter_cfg=dict(filter_empty_gt=True, min_size=32))
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        heldout=heldout,
        dataset=dict(
            coco,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            pipeline=train_pipeline)))
heldout_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        heldout=heldout,
        dataset=dict(
            coco,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            test_mode=True,
            pipeline=test_pipeline)))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        coco,
        _delete_=True,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
heldout_evaluator = dict(
    ann_file=data_root + 'annotations/instances_train2017.json')
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
train_cfg = dict(
    _delete_=True, type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
         milestones=[8, 11], gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=1, by_epoch=True, max_keep_ckpts=3))
log_processor = dict(by_epoch=True)
auto_scale_lr = dict(enable=False, base_batch_size=16)
