# Prior-sampling evolution search on the demo supernet (embedded MNIST).
#   python tools/search.py configs/demo/pse_mbv2_mnist_search.py \
#       work_dirs/pse_mbv2_mnist/epoch_16.pth [--flops-target 4.2]
_base_ = ['./pse_mbv2_mnist.py']

train_cfg = dict(
    _delete_=True,
    type='mmrazor.PriorEvolutionSearchLoop',
    # Scores on images held out of training; the result is reported on val.
    dataloader=_base_.heldout_dataloader,
    evaluator=_base_.val_evaluator,
    max_epochs=3,
    num_candidates=16,
    top_k=4,
    num_mutation=6,
    num_crossover=6,
    mutate_prob=0.2,
    calibrate_sample_num=1000,  # as the supernet's validation
    # MFLOPs at 32x32 input: 30% of the max subnet's 14.13, +-5%. FLOPs as
    # mmengine's get_model_complexity_info counts them on the sliced subnet:
    # convolutions, linear layers, batch norms and pooling
    # (flops_convention='all'). 'conv_linear' counts the multiply-adds of
    # convolutions and linear layers only, what papers call FLOPs (the max
    # subnet: 13.71 instead of 14.13 MFLOPs). Params may be constrained too:
    # dict(flops=(4.03, 4.45), params=(lo, hi)) or dict(params=(lo, hi)).
    constraints_range=dict(flops=(4.03, 4.45)),
    flops_convention='all',
    score_key='accuracy/top1',
    # the first population starts from the 4 subnets with every unit at
    # the same relative width nearest the target (what sandwich_ratio trains)
    ratio_seeds=4,
    prior='checkpoint')

# The search evaluates its own candidates; no epoch validation.
val_cfg = None
val_dataloader = None
val_evaluator = None
