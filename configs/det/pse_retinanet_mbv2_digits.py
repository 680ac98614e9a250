# PSE-Net on an mmdet RetinaNet with a MobileNetV2 backbone, on the embedded
# detection digits (real MNIST digits pasted on 64x64 canvases, COCO boxes):
# a test-sized CPU run. The backbone, the FPN and the head's convolutions
# are pruned where their channels are coupled; every group of the batch
# runs its own subnet through the whole detector and RetinaNet's own losses.
#   python tools/prepare_data.py digits_det
#   python tools/train.py configs/det/pse_retinanet_mbv2_digits.py
# The paper-scale version: configs/det/pse_retinanet_mbv2_coco.py.
custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)
default_scope = 'mmdet'

data_root = 'data/digits_det/'
classes = tuple(str(i) for i in range(10))
image_size = 64

architecture = dict(
    _scope_='mmdet',
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='MobileNetV2',
        widen_factor=0.5,
        out_indices=(2, 4, 6),  # strides 8, 16, 32
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False),
    neck=dict(
        type='FPN',
        in_channels=[16, 48, 160],
        out_channels=32,
        start_level=0,
        num_outs=3),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=len(classes),
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=2,
            scales_per_octave=2,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=200,
        min_bbox_size=0,
        score_thr=0.0,  # an untrained supernet's boxes still count for mAP
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=20))

model = dict(
    _scope_='mmrazor',
    type='PSENet',
    architecture=architecture,
    num_subnets=4,
    sample_strategy='sandwich',
    batch_mode='split',
    execution='sliced',  # detectors and segmentors run group by group
    mutator=dict(
        type='PSEChannelMutator',
        channel_unit_cfg=dict(
            type='PSEMutableChannelUnit',
            default_args=dict(
                candidate_choices=[0.5, 0.75, 1.0],
                choice_mode='ratio',
                divisor=8)),
        parse_cfg=dict(
            type='ChannelAnalyzer',
            demo_input=(1, 3, image_size, image_size),
            tracer_type='FxTracer')))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
dataset = dict(
    type='CocoDataset',
    data_root=data_root,
    metainfo=dict(classes=classes),
    filter_cfg=dict(filter_empty_gt=True, min_size=1),
    backend_args=backend_args)

# Training images minus a held-out slice; the search scores candidates on
# that slice (COCO mAP) and the chosen subnet is reported on val.
heldout = 64
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='HeldOutSplit',
        part='train',
        heldout=heldout,
        dataset=dict(
            dataset,
            ann_file='annotations/train.json',
            data_prefix=dict(img='images/train/'),
            pipeline=train_pipeline)))
heldout_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='HeldOutSplit',
        part='heldout',
        heldout=heldout,
        dataset=dict(
            dataset,
            ann_file='annotations/train.json',
            data_prefix=dict(img='images/train/'),
            test_mode=True,
            pipeline=test_pipeline)))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        ann_file='annotations/val.json',
        data_prefix=dict(img='images/val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
heldout_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/train.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/val.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20, val_interval=20)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = []

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=5),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=20, by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='mmrazor.PriorRecorderHook', top_n=100)]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
