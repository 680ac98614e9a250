# The supernet schedule of MMRazor's AutoSlim configs
# (mmrazor configs/_base_/settings/imagenet_bs1024_spos.py, overridden by
# imagenet_bs2048_autoslim.py): SGD, lr 0.5 for 2048 images per step,
# Nesterov, no weight decay on norms, biases and depthwise convs, linear
# (power 1) decay to zero.
optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=0.5, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(
        bias_decay_mult=0.0, norm_decay_mult=0.0, dwconv_decay_mult=0.0),
    clip_grad=None)

max_epochs = 50
param_scheduler = dict(
    type='PolyLR',
    power=1.0,
    eta_min=0.0,
    by_epoch=True,
    end=max_epochs,
    convert_to_iter_based=True)

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=2048)
