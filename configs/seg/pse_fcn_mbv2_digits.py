# PSE-Net on an mmseg FCN with a (dilated, output stride 8) MobileNetV2
# backbone, on the embedded segmentation digits (real MNIST digits pasted
# on 64x64 canvases, a class per pixel: background or the digit): a
# test-sized CPU run. The backbone and the decode head's convolutions are
# pruned; every group of the batch runs its own subnet through the whole
# segmentor and the decode head's own loss.
#   python tools/prepare_data.py digits_seg
#   python tools/train.py configs/seg/pse_fcn_mbv2_digits.py
# The paper-scale version: configs/seg/pse_deeplabv3_mbv2_cityscapes.py.
custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)
default_scope = 'mmseg'

data_root = 'data/digits_seg/'
classes = ('background', ) + tuple(str(i) for i in range(10))
image_size = 64

architecture = dict(
    _scope_='mmseg',
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(image_size, image_size)),
    backbone=dict(
        type='MobileNetV2',
        widen_factor=0.5,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False),
    decode_head=dict(
        type='FCNHead',
        in_channels=160,
        in_index=3,
        channels=32,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes=len(classes),
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

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

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes),
    img_suffix='.png',
    seg_map_suffix='.png',
    reduce_zero_label=False)

# Training images minus a held-out slice; the search scores candidates on
# that slice (mIoU) and the chosen subnet is reported on val.
heldout = 64
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='HeldOutSplit',
        part='train',
        heldout=heldout,
        dataset=dict(
            dataset,
            data_prefix=dict(
                img_path='img_dir/train', seg_map_path='ann_dir/train'),
            pipeline=train_pipeline)))
heldout_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='HeldOutSplit',
        part='heldout',
        heldout=heldout,
        dataset=dict(
            dataset,
            data_prefix=dict(
                img_path='img_dir/train', seg_map_path='ann_dir/train'),
            pipeline=test_pipeline)))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
heldout_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=4e-5))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20, val_interval=20)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = []

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False),
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
