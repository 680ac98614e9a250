# MMRazor's AutoSlim algorithm on an mmpretrain MobileNetV2 1.5x supernet,
# as in mmrazor configs/nas/mmcls/autoslim/autoslim_mbv2_1.5x_supernet_8xb256_in1k.py,
# ported from mmcls to mmpretrain:
#   * `mmpretrain::` bases, `_scope_='mmpretrain'` on the architecture;
#   * FxTracer instead of the unmaintained BackwardTracer;
#   * one optimizer step per batch (see `optim_wrapper` below).
# The leaf config adds the dataset, the schedule, the runtime,
# `model.data_preprocessor`, and the AutoSlim settings of the schedule:
# `optim_wrapper.accumulative_counts` and `val_cfg`.
_base_ = './mobilenet_v2_1.5x.py'

custom_imports = dict(imports=['psenet_plugin'], allow_failed_imports=False)

supernet = _base_.model

num_random_samples = 2
model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='AutoSlim',
    num_random_samples=num_random_samples,
    architecture=supernet,
    distiller=dict(
        type='ConfigurableDistiller',
        teacher_recorders=dict(
            fc=dict(type='ModuleOutputs', source='head.fc')),
        student_recorders=dict(
            fc=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(
            loss_kl=dict(type='KLDivergence', tau=1, loss_weight=1)),
        loss_forward_mappings=dict(
            loss_kl=dict(
                preds_S=dict(recorder='fc', from_student=True),
                preds_T=dict(recorder='fc', from_student=False)))),
    mutator=dict(
        type='OneShotChannelMutator',
        channel_unit_cfg=dict(
            type='OneShotMutableChannelUnit',
            default_args=dict(
                candidate_choices=list(i / 12 for i in range(2, 13)),
                choice_mode='ratio',
                divisor=8)),
        parse_cfg=dict(
            type='ChannelAnalyzer',
            demo_input=(1, 3, 224, 224),
            tracer_type='FxTracer')))

model_wrapper_cfg = dict(
    type='mmrazor.AutoSlimDDP',
    broadcast_buffers=False,
    find_unused_parameters=False)
