# Prior-sampling evolution search on the demo supernet (embedded MNIST).
#   python tools/search.py configs/demo/pse_mbv2_mnist_search.py \
#       work_dirs/pse_mbv2_mnist/epoch_12.pth [--flops-target 4.2]
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
    # MFLOPs at 32x32 input: 30% of the max subnet's 14.13, +-5%.
    constraints_range=dict(flops=(4.03, 4.45)),
    score_key='accuracy/top1',
    prior='checkpoint')

# The search evaluates its own candidates; no epoch validation.
val_cfg = None
val_dataloader = None
val_evaluator = None
