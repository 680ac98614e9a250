# A short CPU schedule for the embedded MNIST digits.
optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=4e-5, nesterov=True),
    paramwise_cfg=dict(
        bias_decay_mult=0.0, norm_decay_mult=0.0, dwconv_decay_mult=0.0))

max_epochs = 5
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
