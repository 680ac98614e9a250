# Fine-tune the subnet the demo search found (ordinary mmpretrain training
# of the static pruned model, via mmrazor's `sub_model`).
#   python tools/export.py configs/demo/pse_mbv2_mnist.py SUPERNET.pth \
#       work_dirs/pse_mbv2_mnist_search/best_subnet.json --out-dir work_dirs/demo_export
#   python tools/train.py configs/demo/pse_mbv2_mnist_subnet.py
_base_ = [
    '../_base_/models/mobilenet_v2_1.5x.py',
    '../_base_/datasets/mnist5k.py',
    '../_base_/schedules/mnist5k_pse.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)

export_dir = 'work_dirs/demo_export'

supernet = _base_.model
supernet.head.num_classes = 10
supernet.head.topk = (1, )
supernet.data_preprocessor = _base_.data_preprocessor

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='sub_model',
    cfg=supernet,
    fix_subnet=export_dir + '/fix_subnet.yaml',
    mode='mutator',
    init_weight_from_supernet=False,
    init_cfg=dict(type='Pretrained', checkpoint=export_dir +
                  '/subnet_static.pth'))

max_epochs = 4
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
default_hooks = dict(logger=dict(interval=20))
