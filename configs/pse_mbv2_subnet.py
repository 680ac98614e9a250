# Fine-tune a subnet found by the search, as an ordinary mmpretrain model:
# the static pruned MobileNetV2 that tools/export.py wrote, built through
# mmrazor's standard `sub_model` path and initialised from the sliced
# supernet weights.
#   python tools/export.py configs/pse_mbv2.py SUPERNET.pth \
#       work_dirs/pse_mbv2_search_8xb256_in1k/best_subnet.json --out-dir work_dirs/pse_mbv2_subnet_export
#   torchrun --nproc-per-node 8 tools/train.py configs/pse_mbv2_subnet.py --launcher pytorch
# Other exports: --cfg-options model.fix_subnet=DIR/fix_subnet.yaml \
#   model.init_cfg.checkpoint=DIR/subnet_static.pth
_base_ = [
    '_base_/models/mobilenet_v2_1.5x.py',
    '_base_/datasets/imagenet_bs256_autoslim.py',
    '_base_/schedules/imagenet_bs2048_autoslim.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)

export_dir = 'work_dirs/pse_mbv2_subnet_export'

supernet = _base_.model
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

# Fine-tuning schedule: the supernet schedule, shorter and gentler.
max_epochs = 100
optim_wrapper = dict(optimizer=dict(lr=0.1))
param_scheduler = dict(end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
